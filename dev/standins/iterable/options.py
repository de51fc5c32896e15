"""How a sandbox Iterable behaves: API key, rate limits, body cap, profile delay and the seeded catalogue."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

# Per-project limits as the spec's operation descriptions state them: requests per second, or per the
# window of RATE_WINDOWS when the spec states another (the export: 4 a minute).
DEFAULT_RATE_LIMITS: dict[str, float] = {
    "events/track": 2000,
    "events/trackBulk": 10,
    "users/update": 500,
    "users/bulkUpdate": 5,
    "users/getByEmail": 100,
    "users/byUserId": 100,
    "users/getFields": 3,
    "channels": 100,
    "messageTypes": 100,
    "export/data.json": 4,
    "lists": 100,
    "lists/getUsers": 5,
    "lists/size": 5,
}
# lists/subscribe and lists/unsubscribe state no limit in the spec: unpaced unless a test sets one.
RATE_WINDOWS: dict[str, float] = {"export/data.json": 60.0, "lists/getUsers": 60.0, "lists/size": 60.0}

# Epoch milliseconds, as Iterable reports message type timestamps.
_SEED_TIME_MS = 1_700_000_000_000

DEFAULT_CHANNELS: list[dict[str, Any]] = [
    {"id": 1, "name": "Marketing Email", "channelType": "Marketing", "messageMedium": "Email"},
    {"id": 2, "name": "Transactional Email", "channelType": "Transactional", "messageMedium": "Email"},
    {"id": 3, "name": "Marketing SMS", "channelType": "Marketing", "messageMedium": "SMS"},
]

DEFAULT_MESSAGE_TYPES: list[dict[str, Any]] = [
    {"id": 101, "name": "GitLab Marketing", "channelId": 1, "subscriptionPolicy": "OptIn"},
    {"id": 102, "name": "Marketing Message", "channelId": 1, "subscriptionPolicy": "OptOut"},
    {"id": 201, "name": "Receipts", "channelId": 2, "subscriptionPolicy": "OptOut"},
    {"id": 301, "name": "SMS Promotions", "channelId": 3, "subscriptionPolicy": "OptIn"},
]


def _message_types() -> list[dict[str, Any]]:
    return [
        item | {"createdAt": _SEED_TIME_MS, "updatedAt": _SEED_TIME_MS, "rateLimitPerMinute": 0}
        for item in DEFAULT_MESSAGE_TYPES
    ]


@dataclass
class SandboxOptions:
    """Knobs of one sandbox (an email-based project unless ``project_type`` says otherwise); most can change
    at runtime (``/_sandbox/options``)."""

    api_key: str = "sandbox-key"
    limits_enabled: bool = True
    rate_limits: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    max_body_bytes: int = 4_000_000
    # Iterable applies profile writes asynchronously; a positive delay makes that visible to tests.
    profile_delay_seconds: float = 0.0
    channels: list[dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_CHANNELS))
    message_types: list[dict[str, Any]] = field(default_factory=_message_types)
    # What the project does with unknown fields when a request omits createNewFields.
    create_new_fields_default: bool = True
    # Iterable's opt-in message types feature (the seeded catalogue has opt-in types, so on). With it
    # on, users/bulkUpdate cannot write unsubscribedChannelIds / unsubscribedMessageTypeIds (spec).
    opt_in_message_types: bool = True
    # Whether Iterable enabled the additive /api/subscriptions/{group}/{id}... endpoints for the project
    # (the spec: "To enable this API, contact your customer success manager"). Off, they answer 404.
    # On here by default so the stand-in can exercise them; a real project starts without them.
    additive_subscriptions_enabled: bool = True
    # The project type (Iterable: "Project Types and Unique Identifiers"). "email": the address is the
    # unique identifier, preferUserId is honoured and updateExistingUsersOnly ignored; "userId": the
    # userId is, a write naming an unknown userId creates the user whatever preferUserId says, and an
    # item naming only an address cannot be matched; "hybrid": either identifies a user, an unknown one
    # of either is created. updateExistingUsersOnly is honoured in "userId" and "hybrid" projects.
    project_type: str = "email"

    def copy(self) -> SandboxOptions:
        """A deep copy, so a reset can return to the options the sandbox was created with."""
        return copy.deepcopy(self)
