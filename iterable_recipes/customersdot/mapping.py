"""Turn a stored CustomersDot event into what Iterable receives, by the rules of config/event_mapping.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iterable_recipes.config_files import ConfigError
from iterable_recipes.customersdot.contract import FreeRegistration, NamespaceUserInvited, SaasTrialStarted
from iterable_recipes.customersdot.mapping_file import EventMapping, load_event_mapping

DATA_MODELS = {
    "saas_trial_started": SaasTrialStarted.model_fields["data"].annotation,
    "free_registration": FreeRegistration.model_fields["data"].annotation,
    "namespace_user_invited": NamespaceUserInvited.model_fields["data"].annotation,
}


def check_mapping(mapping: EventMapping, source: str = "event mapping") -> EventMapping:
    """Refuse a mapping that misses an event type or names a field the contract does not have."""
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
    if problems:
        raise ConfigError("\n".join(problems))
    return mapping


def load_mapping(path: Path | str | None = None) -> EventMapping:
    """Load the mapping file and check it against the contract; raises ConfigError naming the problem."""
    return check_mapping(load_event_mapping(path), str(path or "config/event_mapping.yaml"))


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
