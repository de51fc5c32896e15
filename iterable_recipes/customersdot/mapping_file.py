"""The event mapping file: which Iterable event each CustomersDot event becomes, and which fields go where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from iterable_recipes.config_files import load_yaml_model

DEFAULT_EVENT_MAPPING = Path(__file__).resolve().parent / "event_mapping.yaml"


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


def load_event_mapping(path: Path | str | None = None) -> EventMapping:
    """Load and validate the mapping file (default: config/event_mapping.yaml); raises ConfigError."""
    return load_yaml_model(path or DEFAULT_EVENT_MAPPING, EventMapping)
