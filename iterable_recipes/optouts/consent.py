"""The consent policy: the channels and message types, what may be subscribed, what an opt-out writes.

Three guards, all pure Python:

- at load, ``ConsentPolicy`` refuses a file that would subscribe anyone to a marketing message type
  with an OptOut policy, an opt-out that would leave people reachable by marketing email, and types
  on unknown channels;
- ``check_against`` compares the policy with Iterable's own ``GET /api/channels`` and
  ``GET /api/messageTypes`` answers before anything is written;
- ``assert_may_subscribe`` is the call-time guard every subscribing write goes through.

An opt-out touches nothing but the channels it leaves: an unsubscribed channel blocks all its message
types, so the person's types stay as they set them. Through ``bulkUpdateSubscriptions`` (which
overwrites each array it is sent) only ``unsubscribedChannelIds`` is sent, and
``optout_channel_ids`` builds it from the profile's current one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from pydantic_core import PydanticCustomError

from iterable_recipes.config_files import ConfigError, load_yaml_model

DEFAULT_CONSENT_POLICY_PATH = Path(__file__).resolve().parent / "consent.yaml"

# The profile field holding the channels a person left (Iterable's name).
UNSUBSCRIBED_CHANNEL_IDS = "unsubscribedChannelIds"


class ConsentError(ConfigError):
    """The consent policy is unsafe, disagrees with Iterable, or a write would break it."""


class ChannelPolicy(BaseModel):
    """One Iterable channel as the project knows it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int
    name: str
    type: Literal["Marketing", "Transactional"]
    medium: Literal["Email", "Push", "SMS"]

    def label(self) -> str:
        """``channel 1 'Marketing Email'``, for messages."""
        return f"channel {self.id} '{self.name}'"


class MessageTypePolicy(BaseModel):
    """One Iterable message type (a child of one channel) as the project knows it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int
    name: str
    channel_id: int
    subscription_policy: Literal["OptIn", "OptOut"]
    note: str | None = None

    def label(self) -> str:
        """``message type 101 'GitLab Marketing'``, for messages."""
        return f"message type {self.id} '{self.name}'"


RETIRED_REMOVE_TYPES = "remove_subscribed_message_type_ids"


class OptOutPolicy(BaseModel):
    """The channels one opt-out leaves; the person's message types are never written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unsubscribe_channel_ids: list[int] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _refuse_retired_key(cls, data: Any) -> Any:
        # Silently ignoring it would let a file claim types are removed when they are not.
        if isinstance(data, Mapping) and RETIRED_REMOVE_TYPES in data:
            raise PydanticCustomError(
                "retired_key",
                f"{RETIRED_REMOVE_TYPES} is no longer used: an opt-out leaves the person's message types "
                "as they set them (the unsubscribed channel blocks them all); delete the key",
            )
        return data


class ConsentPolicy(BaseModel):
    """The validated policy; constructing one runs every load-time refusal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: list[ChannelPolicy]
    message_types: list[MessageTypePolicy]
    marketing_email_channel_id: int
    main_message_type_id: int
    opt_out: OptOutPolicy
    _source: str = PrivateAttr(default="consent policy")

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> ConsentPolicy:
        problems = _load_problems(self)
        if problems:
            # A custom error keeps pydantic's "Value error," prefix out of the message.
            raise PydanticCustomError("consent_policy", "{detail}", {"detail": "; ".join(problems)})
        return self

    # ---- look-ups -------------------------------------------------------------------------------

    def channel(self, channel_id: int) -> ChannelPolicy | None:
        """The configured channel with this id, if any."""
        return next((c for c in self.channels if c.id == channel_id), None)

    def message_type(self, message_type_id: int) -> MessageTypePolicy | None:
        """The configured message type with this id, if any."""
        return next((t for t in self.message_types if t.id == message_type_id), None)

    def is_marketing(self, message_type: MessageTypePolicy) -> bool:
        """Whether the type belongs to a marketing channel."""
        channel = self.channel(message_type.channel_id)
        return channel is not None and channel.type == "Marketing"

    @property
    def main_message_type(self) -> MessageTypePolicy:
        """The type the project subscribes people to ("GitLab Marketing")."""
        found = self.message_type(self.main_message_type_id)
        assert found is not None  # guaranteed at load
        return found

    @property
    def marketing_email_channel(self) -> ChannelPolicy:
        """The channel an opt-out takes people off."""
        found = self.channel(self.marketing_email_channel_id)
        assert found is not None  # guaranteed at load
        return found

    # ---- guards ---------------------------------------------------------------------------------

    def check_against(self, channels: Iterable[Any], message_types: Iterable[Any]) -> None:
        """Compare the policy with Iterable's own channel and message-type lists.

        Items are dicts or objects as ``GET /api/channels`` and ``GET /api/messageTypes`` return
        them (camelCase keys, or snake_case attributes of parsed models). Raises ConsentError
        naming every disagreement: a missing id, a different name, type, medium, channel or
        subscription policy, or an Iterable message type on an unsubscribed channel that the
        policy does not know (the file would no longer describe what an opt-out blocks).
        """
        theirs_channels = {int(_get(c, "id")): c for c in channels}
        theirs_types = {int(_get(t, "id")): t for t in message_types}
        problems: list[str] = []
        for channel in self.channels:
            found = theirs_channels.get(channel.id)
            if found is None:
                problems.append(f"{channel.label()} does not exist in Iterable")
                continue
            for field, ours in (
                ("name", channel.name),
                ("channelType", channel.type),
                ("messageMedium", channel.medium),
            ):
                problems.extend(_disagreement(channel.label(), field, ours, _get(found, field)))
        for message_type in self.message_types:
            found = theirs_types.get(message_type.id)
            if found is None:
                problems.append(f"{message_type.label()} does not exist in Iterable")
                continue
            for field, expected in (
                ("name", message_type.name),
                ("channelId", message_type.channel_id),
                ("subscriptionPolicy", message_type.subscription_policy),
            ):
                problems.extend(_disagreement(message_type.label(), field, expected, _get(found, field)))
        unsubscribed = set(self.opt_out.unsubscribe_channel_ids)
        for type_id, found in sorted(theirs_types.items()):
            channel_id = _get(found, "channelId")
            if self.message_type(type_id) is None and channel_id in unsubscribed:
                problems.append(
                    f"Iterable's message type {type_id} '{_get(found, 'name')}' on channel {channel_id} "
                    "is missing from the policy, which must list every type an opt-out blocks"
                )
        if problems:
            raise ConsentError(f"{self._source} disagrees with Iterable: " + "; ".join(problems))

    def assert_may_subscribe(self, message_type_ids: Iterable[int]) -> None:
        """Refuse subscribing anyone to an unknown type or to a marketing type with an OptOut policy.

        Call it before every write that adds ids to ``subscribedMessageTypeIds``. Unsubscribing
        never needs this guard: it is always allowed.
        """
        for type_id in message_type_ids:
            message_type = self.message_type(int(type_id))
            if message_type is None:
                raise ConsentError(
                    f"refusing to subscribe anyone to message type {type_id}: it is not in {self._source}"
                )
            if self.is_marketing(message_type) and message_type.subscription_policy == "OptOut":
                raise ConsentError(
                    f"refusing to subscribe anyone to {message_type.label()}: it is a marketing type "
                    "with an OptOut policy, which must never be used to reach people"
                )

    # ---- opt-out --------------------------------------------------------------------------------

    def optout_channel_ids(self, current_fields: Mapping[str, Any]) -> list[int]:
        """``unsubscribedChannelIds`` after an opt-out: the profile's own, then the policy's channels.

        Give it the fields of a read made immediately before the write: the array sent replaces the
        stored one, so a channel left after that read would be undone.
        """
        unsubscribed = _id_list(current_fields, UNSUBSCRIBED_CHANNEL_IDS)
        for channel_id in self.opt_out.unsubscribe_channel_ids:
            if channel_id not in unsubscribed:
                unsubscribed.append(channel_id)
        return unsubscribed

    def is_opted_out(self, current_fields: Mapping[str, Any]) -> bool:
        """Whether the profile already left every channel an opt-out unsubscribes.

        An unsubscribed channel blocks all its types whatever their state, so such a person is
        unreachable there and is not written again.
        """
        unsubscribed = set(_id_list(current_fields, UNSUBSCRIBED_CHANNEL_IDS))
        return set(self.opt_out.unsubscribe_channel_ids) <= unsubscribed


def load_consent_policy(path: Path | str | None = None) -> ConsentPolicy:
    """Load and validate the consent policy; ConsentError says which file and why.

    ``path`` is CONSENT_POLICY_PATH's file; without one, the shipped ``consent.yaml`` beside this module.
    """
    path = path or DEFAULT_CONSENT_POLICY_PATH
    try:
        policy = load_yaml_model(path, ConsentPolicy)
    except ConsentError:
        raise
    except ConfigError as exc:
        raise ConsentError(str(exc)) from exc
    policy._source = str(path)
    return policy


# ---- helpers ------------------------------------------------------------------------------------


def _load_problems(policy: ConsentPolicy) -> list[str]:
    """Every reason to refuse the policy at load, each naming the key."""
    problems: list[str] = []
    channels = {c.id: c for c in policy.channels}
    types = {t.id: t for t in policy.message_types}
    if len(channels) != len(policy.channels):
        problems.append("channels: an id appears twice")
    if len(types) != len(policy.message_types):
        problems.append("message_types: an id appears twice")
    for message_type in policy.message_types:
        if message_type.channel_id not in channels:
            problems.append(
                f"message_types: {message_type.label()} references unknown channel {message_type.channel_id}"
            )

    email_id = policy.marketing_email_channel_id
    email = channels.get(email_id)
    if email is None:
        problems.append(f"marketing_email_channel_id: channel {email_id} is not listed")
    elif (email.type, email.medium) != ("Marketing", "Email"):
        problems.append(
            f"marketing_email_channel_id: {email.label()} is {email.type} {email.medium}, not Marketing Email"
        )

    main = types.get(policy.main_message_type_id)
    if main is None:
        problems.append(f"main_message_type_id: message type {policy.main_message_type_id} is not listed")
    elif main.subscription_policy != "OptIn":
        problems.append(
            f"main_message_type_id: subscribing people to {main.label()} is refused: its policy is "
            f"{main.subscription_policy}; the main type must be OptIn (an OptOut marketing type must "
            "never be used to reach people)"
        )

    opt_out = policy.opt_out
    for channel_id in opt_out.unsubscribe_channel_ids:
        if channel_id not in channels:
            problems.append(f"opt_out.unsubscribe_channel_ids: channel {channel_id} is not listed")
    for channel in policy.channels:
        marketing_email = (channel.type, channel.medium) == ("Marketing", "Email")
        if marketing_email and channel.id not in opt_out.unsubscribe_channel_ids:
            problems.append(
                f"opt_out: an opt-out would leave people reachable on marketing {channel.label()}: "
                "opt_out.unsubscribe_channel_ids must include it"
            )
    return problems


def _get(item: Any, field: str) -> Any:
    """A field of a dict or object, by Iterable's camelCase name or its snake_case twin."""
    snake = "".join(f"_{ch.lower()}" if ch.isupper() else ch for ch in field)
    if isinstance(item, Mapping):
        return item.get(field, item.get(snake))
    return getattr(item, field, getattr(item, snake, None))


def _disagreement(label: str, field: str, ours: object, theirs: object) -> list[str]:
    if theirs == ours:
        return []
    return [f"{label}: {field} is {theirs!r} in Iterable, {ours!r} in the policy"]


def _id_list(fields: Mapping[str, Any], key: str) -> list[int]:
    """An id array of the profile; absent or null means empty."""
    return [int(v) for v in fields.get(key) or []]
