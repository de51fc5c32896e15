"""Typed Iterable request and response bodies (from api-docs.json), and the per-item bulk outcome.

Requests forbid unknown fields, so a misspelt field fails here rather than being dropped silently by
Iterable; they serialize with the wire's camelCase names and without ``None`` fields. Responses accept
fields we do not model, since Iterable adds fields over time.

Bulk calls also take plain dicts already in wire form (the sync sends thousands of users a second, and
building a model per row costs more than the request): such dicts are trusted and sent as they are;
the contract tests check their shape against the spec.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from iterable_recipes.clients.errors import ApiError, RetryableError
from iterable_recipes.masking import mask_emails

# Profile fields that hold a person's subscriptions. users/bulkUpdate writes emailListIds, and the
# unsubscribed arrays in projects without opt-in message types, when a profile's dataFields carry them
# (api-docs.json): a sync or mapping naming one could undo an opt-out, so the loaders refuse them.
SUBSCRIPTION_FIELDS: frozenset[str] = frozenset(
    {
        "emailListIds",
        "unsubscribedChannelIds",
        "unsubscribedMessageTypeIds",
        "subscribedMessageTypeIds",
        "userListIds",
    }
)


def refuse_subscription_field(name: str) -> str:
    """``name``, unless it is one of ``SUBSCRIPTION_FIELDS`` (ValueError naming it and why)."""
    if name in SUBSCRIPTION_FIELDS:
        raise ValueError(
            f"{name!r} is a subscription field: profile writes would overwrite the person's "
            "subscriptions with it, so it may not be a target (subscriptions change only through "
            "the opt-out)"
        )
    return name


SubscriptionGroup = Literal["emailList", "messageType", "messageChannel"]
SubscriptionAction = Literal["subscribe", "unsubscribe"]

EVENT_ID_MAX_BYTES = 512
# The code of failures made retryable because a bulk answer's failures could not be pinned on items.
UNATTRIBUTED = "UnattributedFailures"
_EVENT_ID = re.compile(r"[A-Za-z0-9-]+")
_NOT_ID_CHAR = re.compile(r"[^A-Za-z0-9-]+")


def event_id_from(source: str, source_id: str) -> str:
    """A stable, valid Iterable event ``id`` for event ``source_id`` of ``source``.

    The same pair always gives the same id, so a re-send updates Iterable's event instead of adding
    a second one. Readable when the source id is already made of letters, digits and hyphens;
    otherwise (or when too long) a SHA-256 of the pair keeps it unique and within 512 bytes.
    """
    if not source or not source_id:
        raise ValueError("source and source_id must not be empty")
    prefix = _NOT_ID_CHAR.sub("-", source).strip("-") or "src"
    candidate = f"{prefix}-{source_id}"
    if _EVENT_ID.fullmatch(candidate) and len(candidate) <= EVENT_ID_MAX_BYTES:
        return candidate
    digest = hashlib.sha256(f"{source}\x00{source_id}".encode()).hexdigest()
    return f"{prefix[:64]}-{digest}"


def validate_event_id(value: str) -> str:
    """Return ``value`` if Iterable accepts it as an event id (letters, digits, hyphens, <= 512 bytes)."""
    if not _EVENT_ID.fullmatch(value) or len(value.encode()) > EVENT_ID_MAX_BYTES:
        raise ValueError("event id must be 1-512 bytes of letters, digits and hyphens")
    return value


class _Request(BaseModel):
    """Base of request bodies: wire names, unknown fields refused, ``None`` fields left out."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        # Validation errors must not echo inputs: they hold emails.
        hide_input_in_errors=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON body Iterable expects (camelCase, no ``None`` fields)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _Response(BaseModel):
    """Base of response bodies: wire names, unknown fields kept."""

    model_config = ConfigDict(
        extra="allow",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        hide_input_in_errors=True,
    )


class _Identified(_Request):
    """A request about one person: by email, by userId, or both (email wins in email-based projects)."""

    # Left out of reprs so a logged model does not leak the address.
    email: str | None = Field(None, repr=False)
    user_id: str | None = None

    @model_validator(mode="after")
    def _needs_identity(self) -> _Identified:
        if not self.email and not self.user_id:
            raise ValueError("email or userId is required")
        return self


# ---- events ---------------------------------------------------------------------------------------


class TrackEventRequest(_Identified):
    """One event of ``POST /api/events/trackBulk`` (spec: TrackRequest)."""

    event_name: str = Field(min_length=1)
    id: str | None = None
    created_at: int | None = None
    data_fields: dict[str, Any] | None = None
    campaign_id: int | None = None
    template_id: int | None = None
    create_new_fields: bool | None = None

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str | None) -> str | None:
        return None if value is None else validate_event_id(value)


class BulkTrackRequest(_Request):
    """``POST /api/events/trackBulk`` body (spec: BulkTrackRequest)."""

    events: list[TrackEventRequest]


# ---- users ----------------------------------------------------------------------------------------


class BulkUser(_Identified):
    """One user of ``users/bulkUpdate`` (spec: OptionalApiUser; ``createNewFields`` is top-level there)."""

    data_fields: dict[str, Any] | None = None
    prefer_user_id: bool | None = None
    merge_nested_objects: bool | None = None


class BulkUpdateUsersRequest(_Request):
    """``POST /api/users/bulkUpdate`` body (spec: BulkUpdateUsersRequest)."""

    users: list[BulkUser]
    create_new_fields: bool | None = None


# ---- subscriptions --------------------------------------------------------------------------------


class UpdateSubscriptionsRequest(_Identified):
    """One item of ``users/bulkUpdateSubscriptions``: each array sent REPLACES the stored one."""

    email_list_ids: list[int] | None = None
    unsubscribed_channel_ids: list[int] | None = None
    unsubscribed_message_type_ids: list[int] | None = None
    subscribed_message_type_ids: list[int] | None = None
    campaign_id: int | None = None
    template_id: int | None = None
    validate_channel_alignment: bool | None = None


class BulkUpdateSubscriptionsRequest(_Request):
    """``POST /api/users/bulkUpdateSubscriptions`` body."""

    update_subscriptions_requests: list[UpdateSubscriptionsRequest]


class BulkSubscriptionActionRequest(_Request):
    """``PUT /api/subscriptions/{group}/{groupId}?action=`` body: emails and/or userIds."""

    users: list[str] | None = None
    users_by_user_id: list[str] | None = None


# ---- static lists ---------------------------------------------------------------------------------


class ListMember(_Request):
    """One subscriber of ``lists/subscribe`` or ``lists/unsubscribe``: an email or a userId, not both
    (spec: OptionalApiUser, Unsubscriber). Never dataFields: a list write changes membership alone."""

    email: str | None = Field(None, repr=False)
    user_id: str | None = None

    @model_validator(mode="after")
    def _one_identity(self) -> ListMember:
        if bool(self.email) == bool(self.user_id):
            raise ValueError("give exactly one of email and userId")
        return self


class ListSubscribeRequest(_Request):
    """``POST /api/lists/subscribe`` body (spec: SubscribeRequest)."""

    list_id: int
    subscribers: list[ListMember]
    update_existing_users_only: bool | None = None


class ListUnsubscribeRequest(_Request):
    """``POST /api/lists/unsubscribe`` body (spec: UnsubscribeRequest)."""

    list_id: int
    subscribers: list[ListMember]
    channel_unsubscribe: bool | None = None
    campaign_id: int | None = None


class CreateListRequest(_Request):
    """``POST /api/lists`` body."""

    name: str = Field(min_length=1)
    description: str | None = None


# ---- responses ------------------------------------------------------------------------------------


class IterableApiResponse(_Response):
    """The standard envelope ``{msg, code, params}``; ``code`` is "Success" on success."""

    msg: str = ""
    code: str = ""
    params: dict[str, Any] | None = None


class FailedUpdates(_Response):
    """``failedUpdates`` of bulk responses (FailedEventUpdates / FailedUserUpdates)."""

    invalid_emails: list[str] = []
    invalid_user_ids: list[str] = []
    not_found_emails: list[str] = []
    not_found_user_ids: list[str] = []
    forgotten_emails: list[str] = []
    forgotten_user_ids: list[str] = []
    conflict_emails: list[str] = []
    conflict_user_ids: list[str] = []
    invalid_data_emails: list[str] = []
    invalid_data_user_ids: list[str] = []


class BulkTrackResponse(_Response):
    """``events/trackBulk`` answer."""

    success_count: int
    fail_count: int
    failed_updates: FailedUpdates = FailedUpdates()
    disallowed_event_names: list[str] = []
    filtered_out_fields: list[str] = []
    created_fields: list[str] = []
    invalid_emails: list[str] = []
    invalid_user_ids: list[str] = []


class BulkUpdateUsersResponse(_Response):
    """``users/bulkUpdate`` answer (spec: UserBulkUpdateListResponse)."""

    success_count: int
    fail_count: int
    failed_updates: FailedUpdates = FailedUpdates()
    filtered_out_fields: list[str] = []
    created_fields: list[str] = []
    invalid_emails: list[str] = []
    invalid_user_ids: list[str] = []


class BulkUpdateSubscriptionsResponse(_Response):
    """``users/bulkUpdateSubscriptions`` answer; ``valid*Failures`` failed inside Iterable: retry them."""

    success_count: int
    fail_count: int
    invalid_emails: list[str] = []
    invalid_user_ids: list[str] = []
    valid_email_failures: list[str] = []
    valid_user_id_failures: list[str] = []


# lists/subscribe and lists/unsubscribe answer the same UserBulkUpdateListResponse as users/bulkUpdate.
ListMembershipResponse = BulkUpdateUsersResponse


class ListDetails(_Response):
    """One list of ``GET /api/lists``; only ``Standard`` lists are static (take members)."""

    id: int
    name: str
    list_type: str
    created_at: int | None = None
    description: str | None = None


class GetListsResponse(_Response):
    """``GET /api/lists`` answer."""

    lists: list[ListDetails]


class CreateListResponse(_Response):
    """``POST /api/lists`` answer."""

    list_id: int


class IterableUser(_Response):
    """A user profile as ``getByEmail`` / ``byUserId`` return it (subscription arrays sit in dataFields)."""

    email: str | None = None
    user_id: str | None = None
    data_fields: dict[str, Any] = {}


class UserResponse(_Response):
    """``{"user": {...}}``, or ``{}`` when nobody has that email or userId."""

    user: IterableUser | None = None


class FrequencyCap(_Response):
    """A message type's frequency cap."""

    days: int
    messages: int


class Channel(_Response):
    """One channel of ``GET /api/channels``."""

    id: int
    name: str
    channel_type: str
    message_medium: str


class MessageType(_Response):
    """One message type of ``GET /api/messageTypes``."""

    id: int
    name: str
    channel_id: int
    subscription_policy: str
    created_at: int | None = None
    updated_at: int | None = None
    frequency_cap: FrequencyCap | None = None
    rate_limit_per_minute: int | None = None


class UserFieldsResponse(_Response):
    """``GET /api/users/getFields`` answer: each user field's name and the type Iterable holds it as
    (the spec says only "object"; Iterable's docs show ``{"fields": {"name": "type"}}``)."""

    fields: dict[str, str]


class ChannelsResponse(_Response):
    """``GET /api/channels`` answer."""

    channels: list[Channel]


class MessageTypesResponse(_Response):
    """``GET /api/messageTypes`` answer."""

    message_types: list[MessageType]


# ---- bulk outcomes --------------------------------------------------------------------------------


class FailureCategory(StrEnum):
    """Why Iterable refused one item of a bulk call; only ``RETRY`` is worth sending unchanged."""

    INVALID = "invalid"
    NOT_FOUND = "not_found"
    FORGOTTEN = "forgotten"
    CONFLICT = "conflict"
    INVALID_DATA = "invalid_data"
    DISALLOWED = "disallowed"
    RETRY = "retry"
    TOO_LARGE = "too_large"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """One refused item: its index in the batch, category and a reason free of personal data."""

    index: int
    category: FailureCategory
    reason: str
    identity: str | None = field(default=None, repr=False)
    # Iterable's error code when the whole request failed ("BadApiKey", ...), else None.
    code: str | None = None

    @property
    def retryable(self) -> bool:
        """Whether sending the same item again may succeed."""
        return self.category is FailureCategory.RETRY


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """Accepted or failed, for one item of a bulk call."""

    index: int
    accepted: bool
    category: FailureCategory | None = None
    reason: str | None = None
    identity: str | None = field(default=None, repr=False)


@dataclass
class BulkResult:
    """What happened to each item of one or more bulk requests, in the order the items were given.

    ``identities`` holds each item's email or userId (data, not for logs: reprs leave them out).
    ``unattributed_failures`` counts failures Iterable reported that no item could be matched to; a
    request with any is failed closed (``fail_closed``: every item retryable).
    """

    endpoint: str
    identities: list[str | None] = field(default_factory=list, repr=False)
    failures: dict[int, ItemFailure] = field(default_factory=dict)
    unattributed_failures: int = 0
    filtered_out_fields: list[str] = field(default_factory=list)
    created_fields: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """How many items were sent."""
        return len(self.identities)

    @property
    def accepted_count(self) -> int:
        """Items Iterable accepted."""
        return len(self.identities) - len(self.failures)

    @property
    def failed_count(self) -> int:
        """Items Iterable refused."""
        return len(self.failures)

    def accepted_indexes(self) -> list[int]:
        """Indexes of accepted items."""
        return [i for i in range(len(self.identities)) if i not in self.failures]

    def retryable(self) -> list[ItemFailure]:
        """Failures worth resending unchanged later."""
        return [f for f in self.failures.values() if f.retryable]

    def permanent(self) -> list[ItemFailure]:
        """Failures that resending cannot fix."""
        return [f for f in self.failures.values() if not f.retryable]

    def outcomes(self) -> Iterator[ItemOutcome]:
        """Every item's outcome, in order."""
        for index, identity in enumerate(self.identities):
            failure = self.failures.get(index)
            if failure is None:
                yield ItemOutcome(index, True, identity=identity)
            else:
                yield ItemOutcome(index, False, failure.category, failure.reason, identity)

    def extend(self, other: BulkResult) -> BulkResult:
        """Append ``other``'s items after this result's (their indexes shift); returns ``self``."""
        offset = len(self.identities)
        self.identities.extend(other.identities)
        for index, failure in other.failures.items():
            self.failures[index + offset] = ItemFailure(
                index + offset, failure.category, failure.reason, failure.identity, failure.code
            )
        self.unattributed_failures += other.unattributed_failures
        self.filtered_out_fields.extend(
            f for f in other.filtered_out_fields if f not in self.filtered_out_fields
        )
        self.created_fields.extend(f for f in other.created_fields if f not in self.created_fields)
        return self

    def fail_closed(self) -> BulkResult:
        """When some failures could not be pinned on items, every item becomes retryable; returns ``self``.

        A failure Iterable counted but named in no form we sent could be any item's, so no item of the
        request can be called accepted (an opt-out audited "opted out" that was not). Call it once a
        request's answer is fully read, before merging it with other requests' results.
        """
        if self.unattributed_failures <= 0:
            return self
        reason = (
            f"{self.unattributed_failures} failure(s) named no item of the request; "
            "which items were applied cannot be told"
        )
        self.failures = {
            i: ItemFailure(i, FailureCategory.RETRY, reason, identity, code=UNATTRIBUTED)
            for i, identity in enumerate(self.identities)
        }
        return self

    @classmethod
    def whole_request_failed(cls, endpoint: str, size: int, error: ApiError) -> BulkResult:
        """Every one of ``size`` items failed the same way, because the request as a whole did."""
        category = FailureCategory.RETRY if isinstance(error, RetryableError) else FailureCategory.REJECTED
        reason = mask_emails(str(error))
        result = cls(endpoint, identities=[None] * size)
        result.failures = {i: ItemFailure(i, category, reason, code=error.code) for i in range(size)}
        return result

    def without_identities(self) -> BulkResult:
        """The same outcomes by position with every email and userId left out (safe to return from a task)."""
        return BulkResult(
            self.endpoint,
            identities=[None] * len(self.identities),
            failures={
                i: ItemFailure(i, f.category, mask_emails(f.reason), code=f.code)
                for i, f in self.failures.items()
            },
            unattributed_failures=self.unattributed_failures,
            filtered_out_fields=list(self.filtered_out_fields),
            created_fields=list(self.created_fields),
        )

    @classmethod
    def merge(cls, endpoint: str, results: Sequence[BulkResult]) -> BulkResult:
        """One result for consecutive batches, indexes counted across all of them."""
        merged = cls(endpoint)
        for result in results:
            merged.extend(result)
        return merged


@dataclass(frozen=True, slots=True)
class Encoded:
    """A bulk item with its request JSON, encoded once: batching measures these bytes and the client
    sends them as they are (encoding every item twice, to size it and to send it, cost a fifth of a
    sync's CPU)."""

    item: BaseModel | Mapping[str, Any]
    raw: bytes


BulkItem = BaseModel | Mapping[str, Any] | Encoded


def encode_item(item: BulkItem) -> Encoded:
    """``item`` with its JSON as the client sends it (aliases, no None fields for models)."""
    if isinstance(item, Encoded):
        return item
    if isinstance(item, BaseModel):
        return Encoded(item, item.model_dump_json(by_alias=True, exclude_none=True).encode())
    return Encoded(item, orjson.dumps(item))


def plain(item: BulkItem) -> BaseModel | Mapping[str, Any]:
    """The item itself, model or wire dict, whether or not it was encoded."""
    return item.item if isinstance(item, Encoded) else item


def item_identity(item: BulkItem) -> str | None:
    """The email (preferred, as Iterable prefers it) or userId of a bulk item, model or wire dict."""
    item = plain(item)
    if isinstance(item, BaseModel):
        return getattr(item, "email", None) or getattr(item, "user_id", None)
    return item.get("email") or item.get("userId")
