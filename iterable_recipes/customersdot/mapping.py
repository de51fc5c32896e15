"""The event mapping (event_mapping.yaml): which Iterable event each CustomersDot event becomes, which
fields go to the event and which to the profile, checked against the contract when loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from iterable_recipes.clients.iterable_models import refuse_subscription_field
from iterable_recipes.config_files import ConfigError, load_yaml_model
from iterable_recipes.customersdot.contract import FreeRegistration, NamespaceUserInvited, SaasTrialStarted

DEFAULT_EVENT_MAPPING = Path(__file__).resolve().parent / "event_mapping.yaml"
DATA_MODELS = {
    "saas_trial_started": SaasTrialStarted.model_fields["data"].annotation,
    "free_registration": FreeRegistration.model_fields["data"].annotation,
    "namespace_user_invited": NamespaceUserInvited.model_fields["data"].annotation,
}


class EventRule(BaseModel):
    """How one event type is forwarded: its Iterable event name and its field routing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_name: str = Field(min_length=1, max_length=255)
    event_fields: dict[str, str] = Field(default_factory=dict)
    profile_fields: dict[str, str] = Field(default_factory=dict)
    forward_when: dict[str, list[str]] | None = None

    @field_validator("event_fields", "profile_fields", mode="before")
    @classmethod
    def _names_to_renames(cls, value: Any) -> Any:
        """A plain list keeps each field's name; a mapping renames (source: iterable_name)."""
        if isinstance(value, list):
            return {name: name for name in value}
        return value

    def forwards(self, data: dict[str, Any]) -> bool:
        """True when the event's data matches every ``forward_when`` condition (or there are none)."""
        if not self.forward_when:
            return True
        return all(str(data.get(field)) in allowed for field, allowed in self.forward_when.items())


class EventMapping(BaseModel):
    """The whole file: one rule per CustomersDot event type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    events: dict[str, EventRule]


def check_mapping(mapping: EventMapping, source: str = "event mapping") -> EventMapping:
    """Refuse a mapping that misses an event type, names a field the contract does not have, or targets
    a subscription field."""
    problems = [f"{source}: events.{kind}: missing" for kind in DATA_MODELS if kind not in mapping.events]
    for kind, rule in mapping.events.items():
        model = DATA_MODELS.get(kind)
        if model is None:
            problems.append(f"{source}: events.{kind}: not a CustomersDot event type")
            continue
        known = set(model.model_fields)
        for part in ("event_fields", "profile_fields", "forward_when"):
            for field in getattr(rule, part) or {}:
                if field not in known:
                    problems.append(f"{source}: events.{kind}.{part}.{field}: no such field in the contract")
        for part in ("event_fields", "profile_fields"):
            for field, target in getattr(rule, part).items():
                try:
                    refuse_subscription_field(target)
                except ValueError as refused:
                    problems.append(f"{source}: events.{kind}.{part}.{field}: {refused}")
    if problems:
        raise ConfigError("\n".join(problems))
    return mapping


def load_mapping(path: Path | str | None = None) -> EventMapping:
    """Load the mapping file (default: event_mapping.yaml beside this module) and check it against the
    contract; raises ConfigError naming the file, the key and the problem."""
    source = path or DEFAULT_EVENT_MAPPING
    return check_mapping(load_yaml_model(source, EventMapping), str(source))


def is_forwarded(
    event: SaasTrialStarted | FreeRegistration | NamespaceUserInvited, mapping: EventMapping
) -> bool:
    """Whether ``to_iterable`` forwards ``event``, without building its bodies (the receiver's question)."""
    rule = mapping.events.get(event.type)
    if rule is None:
        raise ConfigError(f"event mapping: events.{event.type}: missing")
    return not rule.forward_when or rule.forwards(event.data.model_dump(mode="json", exclude_none=True))


def to_iterable(
    event: SaasTrialStarted | FreeRegistration | NamespaceUserInvited, mapping: EventMapping
) -> tuple[dict[str, Any], str, dict[str, Any]] | None:
    """(profile dataFields, Iterable eventName, event dataFields) for ``event``, or None when the event is
    not forwarded. Empty fields are left out, so a missing value never blanks a profile field."""
    rule = mapping.events.get(event.type)
    if rule is None:
        raise ConfigError(f"event mapping: events.{event.type}: missing")
    data = event.data.model_dump(mode="json", exclude_none=True)
    if not rule.forwards(data):
        return None
    profile = {target: data[name] for name, target in rule.profile_fields.items() if name in data}
    fields = {target: data[name] for name, target in rule.event_fields.items() if name in data}
    return profile, rule.event_name, fields
