"""The Iterable REST client: one keep-alive httpx session, per-endpoint rate limits, retries, typed errors.

Every request first takes a slot from the limiter under its endpoint name (``ITERABLE_RATE_LIMITS``
holds the spec's per-project limits), then is sent and classified into the project's error tree:

    429, 5xx, 408, transport errors, timeouts        RetryableError (retried here per RetryPolicy)
    413, BatchTooLarge, bulk RequestFieldsTypes...   SplitBatchError (see clients.batching)
    every other 4xx                                  PermanentError with Iterable's code and message

A 200 bulk answer with ``failCount > 0`` is read item by item into a ``BulkResult``
(clients.iterable_bulk); when its failures cannot all be pinned on items, every item is retryable.
Error messages carry the endpoint name, status, Iterable's code and its message with email addresses
masked; never a URL, an email or the key.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
import orjson
from pydantic import BaseModel, ValidationError

from iterable_recipes.clients.errors import ApiError, PermanentError, RetryableError, SplitBatchError
from iterable_recipes.clients.iterable_bulk import item_ids, mark_failures, read_bulk_result
from iterable_recipes.clients.iterable_models import (
    BulkItem,
    BulkResult,
    BulkSubscriptionActionRequest,
    BulkTrackResponse,
    BulkUpdateSubscriptionsResponse,
    BulkUpdateUsersResponse,
    BulkUser,
    Channel,
    ChannelsResponse,
    CreateListRequest,
    CreateListResponse,
    Encoded,
    FailedUpdates,
    FailureCategory,
    GetListsResponse,
    IterableApiResponse,
    IterableUser,
    ListDetails,
    ListMember,
    ListMembershipResponse,
    MessageType,
    MessageTypesResponse,
    SubscriptionAction,
    SubscriptionGroup,
    TrackEventRequest,
    UpdateSubscriptionsRequest,
    UserFieldsResponse,
    UserResponse,
    plain,
)
from iterable_recipes.clients.limiter import InMemoryLimiter, NoLimiter, Rate, RateLimiter
from iterable_recipes.clients.retry import DEFAULT_RETRY, RetryPolicy, call_with_retries
from iterable_recipes.identities import email_match_key
from iterable_recipes.masking import mask_emails

__all__ = [
    "BASE_URLS",
    "DEFAULT_LIST_WRITES_PER_SECOND",
    "ITERABLE_RATE_LIMITS",
    "LIST_WRITE_ENDPOINTS",
    "IterableClient",
    "iterable_limiter",
    "paced_rates",
]

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

BASE_URLS: dict[str, str] = {"us": "https://api.iterable.com", "eu": "https://api.eu.iterable.com"}

# Per-project limits from the operation descriptions of api-docs.json. The subscription endpoints
# state none, so they are not paced here (a 429 still slows them down).
ITERABLE_RATE_LIMITS: dict[str, Rate] = {
    "events/trackBulk": Rate(10),
    "users/bulkUpdate": Rate(5),
    "users/getByEmail": Rate(100),
    "users/byUserId": Rate(100),
    "users/getFields": Rate(3),
    "channels": Rate(100),
    "messageTypes": Rate(100),
    "export/data.json": Rate(4, 60.0),
    "lists": Rate(100),
    "lists/getUsers": Rate(5, 60.0),
    "lists/size": Rate(5, 60.0),
}
# lists/subscribe and lists/unsubscribe state no limit in the spec: they are paced at a configured rate
# (ITERABLE_LIST_WRITES_PER_SECOND), each endpoint on its own, by the same shared limiter.
LIST_WRITE_ENDPOINTS = ("lists/subscribe", "lists/unsubscribe")
DEFAULT_LIST_WRITES_PER_SECOND = 5.0

NO_USER_WITH_ID = "error.users.noUserWithIdExists"
UNEXPECTED = "UnexpectedResponse"  # our code for an answer that is not what the spec promises


# Iterable allows at most N requests in any window (a second, or a minute for export and lists/getUsers).
# The limiter spaces grants window/N apart; requests reach Iterable a few milliseconds apart from when
# they were granted, so each window is widened by a fixed margin (ITERABLE_RATE_MARGIN_SECONDS). A
# project whose other integrations use the same limits keeps to a share of each (ITERABLE_RATE_SHARE).
DEFAULT_RATE_SHARE = 1.0
DEFAULT_RATE_MARGIN_SECONDS = 0.035


def paced_rates(
    share: float = DEFAULT_RATE_SHARE,
    list_writes_per_second: float = DEFAULT_LIST_WRITES_PER_SECOND,
    margin_seconds: float = DEFAULT_RATE_MARGIN_SECONDS,
) -> dict[str, Rate]:
    """The rates any limiter holds: ``ITERABLE_RATE_LIMITS`` at ``share`` of each limit, each window
    widened by ``margin_seconds``, and the list writes at ``list_writes_per_second`` (our own rate)."""
    if not 0 < share <= 1:
        raise ValueError("share must be above 0 and at most 1")
    # A fractional rate (0.5/s) is held as one request per 1/rate seconds.
    per = 1.0 if list_writes_per_second >= 1 else 1.0 / list_writes_per_second
    lists = {name: Rate(max(1, int(list_writes_per_second * per)), per) for name in LIST_WRITE_ENDPOINTS}
    spec = {
        name: Rate(r.limit, r.seconds / share + margin_seconds) for name, r in ITERABLE_RATE_LIMITS.items()
    }
    return spec | lists


def iterable_limiter(
    share: float = DEFAULT_RATE_SHARE,
    list_writes_per_second: float = DEFAULT_LIST_WRITES_PER_SECOND,
    margin_seconds: float = DEFAULT_RATE_MARGIN_SECONDS,
) -> InMemoryLimiter:
    """A one-process limiter holding Iterable's per-project limits (share one per project)."""
    return InMemoryLimiter(paced_rates(share, list_writes_per_second, margin_seconds))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _envelope(response: httpx.Response) -> tuple[str | None, str, dict[str, Any]]:
    """Iterable's (code, msg, params) from an error body; plain-text bodies give (None, text, {})."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return None, response.text[:200].strip(), {}
    if not isinstance(body, dict):
        return None, "", {}
    params = body.get("params")
    return body.get("code"), str(body.get("msg") or ""), params if isinstance(params, dict) else {}


def _dumps(payload: Any) -> bytes:
    return orjson.dumps(payload)


def _wire(item: BulkItem) -> Any:
    if isinstance(item, Encoded):
        return orjson.Fragment(item.raw)  # its bytes as they are, not encoded again
    if isinstance(item, BaseModel):
        return item.model_dump(mode="json", by_alias=True, exclude_none=True)
    return item


def _event_name(item: BulkItem) -> str | None:
    item = plain(item)
    if isinstance(item, BaseModel):
        return getattr(item, "event_name", None)
    return item.get("eventName")


class IterableClient:
    """A synchronous, thread-safe Iterable client; share one per process and project.

    ``base_url`` wins over ``region``; ``transport`` replaces the network (tests); ``limiter`` is
    shared with every other sender to the same project; ``retry`` sets the in-client retries.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        region: Literal["us", "eu"] = "us",
        transport: httpx.BaseTransport | None = None,
        limiter: RateLimiter | None = None,
        timeout: float = 30,
        retry: RetryPolicy | None = None,
        pool_size: int = 20,
    ) -> None:
        if not api_key:
            raise ValueError("an Iterable API key is required")
        if base_url is None:
            if region not in BASE_URLS:
                raise ValueError(f"unknown Iterable region {region!r}")
            base_url = BASE_URLS[region]
        self.base_url = base_url.rstrip("/")
        self.limiter: RateLimiter = limiter if limiter is not None else NoLimiter()
        self.retry = retry if retry is not None else DEFAULT_RETRY
        self._http = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            timeout=timeout,
            headers={"Api-Key": api_key, "Content-Type": "application/json", "Accept": "application/json"},
            limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
        )

    def __repr__(self) -> str:
        return f"IterableClient(base_url={self.base_url!r})"

    def __enter__(self) -> IterableClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # ---- transport and classification -------------------------------------------------------------

    def _request(
        self,
        name: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        bulk: bool = False,
        ok: tuple[int, ...] = (200,),
        retry: RetryPolicy | None = None,
        accept: str | None = None,
    ) -> httpx.Response:
        """Send one request with limiter and retries (``retry`` or the client's); return the response or
        raise an ``ApiError``. ``accept`` replaces the JSON Accept header (the text/plain operations)."""
        content = None if body is None else _dumps(body)
        headers = {"Accept": accept} if accept else None

        def once() -> httpx.Response:
            self.limiter.acquire(name)
            try:
                response = self._http.request(method, path, content=content, params=params, headers=headers)
            except httpx.TimeoutException as exc:
                raise RetryableError(f"timed out ({type(exc).__name__})", endpoint=name) from None
            except httpx.TransportError as exc:
                raise RetryableError(f"transport error ({type(exc).__name__})", endpoint=name) from None
            if response.status_code in ok:
                return response
            raise self._throttled(name, self._error(name, response, bulk=bulk))

        def on_retry(attempt: int, error: RetryableError, delay: float) -> None:
            # Captured into the run's logs by the flows (tasks/logs.py); str(error) holds no email or key.
            asked = f" (Retry-After: {error.retry_after:g} s)" if error.retry_after is not None else ""
            if error.held_by_limiter:
                log.warning(
                    "Iterable %s attempt %d failed (%s); the rate limiter holds every sender back%s "
                    "and lowers the endpoint's rate for a while, then it is sent again",
                    name, attempt, error, asked,
                )  # fmt: skip
                return
            log.warning(
                "Iterable %s attempt %d failed (%s); waiting %.2f s%s, then sending it again",
                name, attempt, error, delay, asked,
            )  # fmt: skip

        return call_with_retries(once, retry if retry is not None else self.retry, on_retry=on_retry)

    def _throttled(self, name: str, error: ApiError) -> ApiError:
        """``error``, after telling the limiter of a 429: it pauses every sender sharing it (the
        Retry-After, or its own back-off) and lowers the endpoint's rate, and so holds the retry's wait
        (``clients.limiter`` has the rule). Without a limiter the retry policy waits instead."""
        refused = error.status == 429 or error.code == "RateLimitExceeded"
        if refused and isinstance(error, RetryableError) and not isinstance(self.limiter, NoLimiter):
            self.limiter.slow_down(name, error.retry_after)
            error.held_by_limiter = True
        return error

    @staticmethod
    def _error(name: str, response: httpx.Response, *, bulk: bool) -> ApiError:
        status = response.status_code
        code, msg, params = _envelope(response)
        message = mask_emails(msg) or response.reason_phrase or "error"
        if code == "RequestFieldsTypesMismatched":
            fields = params.get("validationErrors")
            if isinstance(fields, dict) and fields:
                # Field names only: offending values may be personal data.
                message = f"{message} (fields: {', '.join(sorted(map(str, fields)))})"
        if status == 429 or code == "RateLimitExceeded":
            return RetryableError(
                message, endpoint=name, status=status, code=code, retry_after=_retry_after(response)
            )
        if status >= 500 or status == 408:
            return RetryableError(
                message, endpoint=name, status=status, code=code, retry_after=_retry_after(response)
            )
        if status == 413 or code == "BatchTooLarge":
            return SplitBatchError(message, endpoint=name, status=status, code=code or "BatchTooLarge")
        if code == "RequestFieldsTypesMismatched" and bulk:
            return SplitBatchError(message, endpoint=name, status=status, code=code)
        return PermanentError(message, endpoint=name, status=status, code=code)

    @staticmethod
    def _json(name: str, response: httpx.Response) -> Any:
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            # A 200 we cannot read may or may not have been applied; resending is safe because
            # every write we send is idempotent (event ids, merge or overwrite semantics).
            raise RetryableError(
                "unreadable success body", endpoint=name, status=response.status_code
            ) from None

    @staticmethod
    def _parse(name: str, model: type[M], data: Any) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            # Field locations only (inputs are hidden): the answer is not what the spec promises.
            where = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()[:5])
            raise PermanentError(
                f"unexpected answer shape ({where})", endpoint=name, code=UNEXPECTED
            ) from None

    def _envelope_call(
        self, name: str, method: str, path: str, body: Any = None, **kw: Any
    ) -> IterableApiResponse:
        response = self._request(name, method, path, body=body, **kw)
        data = self._json(name, response)
        if response.status_code == 202 and not data:
            return IterableApiResponse(msg="accepted", code="Accepted")
        return self._parse(name, IterableApiResponse, data)

    # ---- events -----------------------------------------------------------------------------------

    def track_events(self, events: Sequence[TrackEventRequest | Mapping[str, Any] | Encoded]) -> BulkResult:
        """``POST /api/events/trackBulk``: one request (batch with ``clients.batching`` first)."""
        name = "events/trackBulk"
        wire = [_wire(e) for e in events]
        data = self._json(
            name, self._request(name, "POST", "/api/events/trackBulk", body={"events": wire}, bulk=True)
        )
        answer = self._parse(name, BulkTrackResponse, data)
        result = read_bulk_result(name, events, answer.fail_count, answer.failed_updates, answer)
        if answer.disallowed_event_names:
            blocked = set(answer.disallowed_event_names)
            mark_failures(
                result,
                [i for i, item in enumerate(events) if _event_name(item) in blocked],
                FailureCategory.DISALLOWED,
                "event name disallowed by the project",
                answer.fail_count,
            )
        return result.fail_closed()

    # ---- users ------------------------------------------------------------------------------------

    def bulk_update_users(
        self, users: Sequence[BulkUser | Mapping[str, Any] | Encoded], create_new_fields: bool | None = None
    ) -> BulkResult:
        """``POST /api/users/bulkUpdate``: one request of at most 1000 users / 4 MB (see batching)."""
        name = "users/bulkUpdate"
        body: dict[str, Any] = {"users": [_wire(u) for u in users]}
        if create_new_fields is not None:
            body["createNewFields"] = create_new_fields
        data = self._json(name, self._request(name, "POST", "/api/users/bulkUpdate", body=body, bulk=True))
        answer = self._parse(name, BulkUpdateUsersResponse, data)
        return read_bulk_result(name, users, answer.fail_count, answer.failed_updates, answer).fail_closed()

    def get_user_by_email(self, email: str) -> IterableUser | None:
        """``GET /api/users/getByEmail``: the profile, or None when Iterable answers exactly ``{}``.

        Any other answer without a user raises ``RetryableError`` (code ``UnexpectedResponse``).
        """
        return self._get_user("users/getByEmail", "/api/users/getByEmail", {"email": email})

    def get_user_by_user_id(self, user_id: str) -> IterableUser | None:
        """``GET /api/users/byUserId``: the profile, or None when Iterable knows no such userId."""
        try:
            return self._get_user("users/byUserId", "/api/users/byUserId", {"userId": user_id})
        except PermanentError as error:
            if error.code == NO_USER_WITH_ID:
                return None
            raise

    def _get_user(self, name: str, path: str, params: Mapping[str, str]) -> IterableUser | None:
        response = self._request(name, "GET", path, params=params)
        # Read the body even when empty: _json's "no body is {}" would turn an empty answer into nobody.
        data = self._json(name, response) if response.content else None
        # Only {} means nobody. Anything else without a user (an error envelope under 200, no body, a
        # user without an identity) may hide a person who exists, and "not in Iterable" makes the
        # opt-out skip them: an answer we cannot read is retried, never taken for a miss.
        if isinstance(data, dict) and not data:
            return None
        unexpected = RetryableError(
            "answer is neither {} nor a user", endpoint=name, status=response.status_code, code=UNEXPECTED
        )
        if not isinstance(data, dict) or not isinstance(data.get("user"), dict):
            raise unexpected
        try:
            user = self._parse(name, UserResponse, data).user
        except PermanentError:
            raise unexpected from None
        if user is None or not (user.email or user.user_id):
            raise unexpected
        return user

    # ---- subscriptions ----------------------------------------------------------------------------

    def bulk_update_subscriptions(
        self,
        requests: Sequence[UpdateSubscriptionsRequest | Mapping[str, Any] | Encoded],
        *,
        retry: RetryPolicy | None = None,
    ) -> BulkResult:
        """``POST /api/users/bulkUpdateSubscriptions``; ``valid*Failures`` come back as retryable items.

        Each array sent overwrites the stored one, so a caller whose arrays come from a read passes
        ``retry=NO_RETRY`` and reads again before resending.
        """
        name = "users/bulkUpdateSubscriptions"
        body = {"updateSubscriptionsRequests": [_wire(r) for r in requests]}
        response = self._request(
            name, "POST", "/api/users/bulkUpdateSubscriptions", body=body, bulk=True, retry=retry
        )
        answer = self._parse(name, BulkUpdateSubscriptionsResponse, self._json(name, response))
        failed = FailedUpdates(invalid_emails=answer.invalid_emails, invalid_user_ids=answer.invalid_user_ids)
        result = read_bulk_result(name, requests, answer.fail_count, failed, None)
        retry_emails = {email_match_key(e) for e in answer.valid_email_failures}
        retry_ids = set(answer.valid_user_id_failures)
        if retry_emails or retry_ids:
            matching = []
            for index, item in enumerate(requests):
                mail, uid = item_ids(item)
                if (mail and email_match_key(mail) in retry_emails) or (uid and uid in retry_ids):
                    matching.append(index)
            mark_failures(
                result, matching, FailureCategory.RETRY, "failed inside Iterable; retry", answer.fail_count
            )
        return result.fail_closed()

    def unsubscribe(
        self, group: SubscriptionGroup, group_id: int, *, email: str | None = None, user_id: str | None = None
    ) -> IterableApiResponse:
        """``DELETE /api/subscriptions/{group}/{id}/user|byUserId/...``: remove one person."""
        if (email is None) == (user_id is None):
            raise ValueError("give exactly one of email and user_id")
        who = (
            f"user/{quote(email, safe='')}"
            if email is not None
            else f"byUserId/{quote(str(user_id), safe='')}"
        )
        path = f"/api/subscriptions/{group}/{int(group_id)}/{who}"
        return self._envelope_call("subscriptions/single", "DELETE", path, ok=(200, 202))

    def bulk_subscription(
        self,
        group: SubscriptionGroup,
        group_id: int,
        action: SubscriptionAction,
        emails: Sequence[str] | None = None,
        user_ids: Sequence[str] | None = None,
    ) -> IterableApiResponse:
        """``PUT /api/subscriptions/{group}/{id}?action=``: (un)subscribe many; 200 and 202 both succeed."""
        if action not in ("subscribe", "unsubscribe"):
            raise ValueError("action must be subscribe or unsubscribe")
        request = BulkSubscriptionActionRequest(
            users=list(emails) if emails else None, users_by_user_id=list(user_ids) if user_ids else None
        )
        return self._envelope_call(
            "subscriptions/bulk",
            "PUT",
            f"/api/subscriptions/{group}/{int(group_id)}",
            request.to_wire(),
            params={"action": action},
            ok=(200, 202),
            bulk=True,
        )

    # ---- static lists -----------------------------------------------------------------------------

    def subscribe_to_list(
        self,
        list_id: int,
        members: Sequence[ListMember | Mapping[str, Any] | Encoded],
        *,
        update_existing_users_only: bool = True,
    ) -> BulkResult:
        """``POST /api/lists/subscribe``: one request of at most 1000 members / 4 MB (see batching).

        Membership only: no dataFields, no channel or message type. ``update_existing_users_only``
        (default true) keeps unknown people out where Iterable respects it: userID-based and hybrid
        projects only (the spec); an email-based project creates unknown addresses, so a caller that
        must create nobody looks them up first. Members Iterable names in the 200 body (invalid, not
        found, forgotten...) come back as item failures, never as accepted.
        """
        request = {
            "listId": int(list_id),
            "subscribers": [_wire(m) for m in members],
            "updateExistingUsersOnly": update_existing_users_only,
        }
        return self._list_write("lists/subscribe", "/api/lists/subscribe", members, request)

    def unsubscribe_from_list(
        self,
        list_id: int,
        members: Sequence[ListMember | Mapping[str, Any] | Encoded],
        *,
        channel_unsubscribe: bool = False,
    ) -> BulkResult:
        """``POST /api/lists/unsubscribe``: remove members from a static list (at most 1000 / 4 MB).

        ``channel_unsubscribe`` true would also unsubscribe them from the list's channel (a global
        marketing opt-out): list syncs always send false, since leaving a list is not an opt-out.
        """
        request = {
            "listId": int(list_id),
            "subscribers": [_wire(m) for m in members],
            "channelUnsubscribe": channel_unsubscribe,
        }
        return self._list_write("lists/unsubscribe", "/api/lists/unsubscribe", members, request)

    def _list_write(
        self,
        name: str,
        path: str,
        members: Sequence[ListMember | Mapping[str, Any] | Encoded],
        body: dict[str, Any],
    ) -> BulkResult:
        data = self._json(name, self._request(name, "POST", path, body=body, bulk=True))
        answer = self._parse(name, ListMembershipResponse, data)
        result = read_bulk_result(name, members, answer.fail_count, answer.failed_updates, answer)
        # Members counted neither as failed nor as updated may have been skipped silently (Iterable
        # ignores unknown people under updateExistingUsersOnly): no member of such an answer is
        # called accepted.
        shortfall = len(members) - len(result.failures) - answer.success_count
        if shortfall > 0:
            result.unattributed_failures = max(result.unattributed_failures, shortfall)
        return result.fail_closed()

    def get_lists(self) -> list[ListDetails]:
        """``GET /api/lists``: every list of the project (static ones have listType ``Standard``)."""
        name = "lists"
        response = self._request(name, "GET", "/api/lists")
        return self._parse(name, GetListsResponse, self._json(name, response)).lists

    def create_list(self, name: str, description: str | None = None) -> int:
        """``POST /api/lists``: a new static list; returns its id."""
        endpoint = "lists/create"
        body = CreateListRequest(name=name, description=description).to_wire()
        response = self._request(endpoint, "POST", "/api/lists", body=body)
        return self._parse(endpoint, CreateListResponse, self._json(endpoint, response)).list_id

    def get_list_users(self, list_id: int, *, prefer_user_id: bool = False) -> list[str]:
        """``GET /api/lists/getUsers``: every member's email (or userId), one per line of a text body.

        5 requests a minute per project: for checks and reports, not for deciding who to send. A body
        that is not plain lines (a JSON envelope under 200) is retryable, never an empty list.
        """
        name = "lists/getUsers"
        params = {"listId": str(int(list_id)), "preferUserId": "true" if prefer_user_id else "false"}
        text = self._request(name, "GET", "/api/lists/getUsers", params=params, accept="text/plain").text
        if text.lstrip().startswith(("{", "[")):
            raise RetryableError("answer is not a list of members", endpoint=name, code=UNEXPECTED)
        return [line.strip() for line in text.splitlines() if line.strip()]

    def get_list_size(self, list_id: int) -> int:
        """``GET /api/lists/{listId}/size``: how many members the list has (5 requests a minute)."""
        name = "lists/size"
        response = self._request(name, "GET", f"/api/lists/{int(list_id)}/size", accept="text/plain")
        raw = response.text.strip().strip('"')
        if not raw.isdigit():
            raise RetryableError("answer is not a count", endpoint=name, code=UNEXPECTED)
        return int(raw)

    # ---- export -----------------------------------------------------------------------------------

    def export_users(self, only_fields: Sequence[str]) -> Iterator[dict[str, Any]]:
        """``GET /api/export/data.json`` of every user (``range=All``), one dict per line as it streams.

        The spec allows 4 requests a minute per project, so one export replaces thousands of getByEmail
        calls. Only the request is retried here: a stream broken midway raises ``RetryableError`` and
        the caller starts the export again (a half-read export is not a complete one).
        """
        name = "export/data.json"
        params = httpx.QueryParams(
            [("dataTypeName", "user"), ("range", "All"), *(("onlyFields", f) for f in only_fields)]
        )
        with self._export_stream(name, params) as response:
            try:
                for line in response.iter_lines():
                    if line.strip():
                        yield self._export_row(name, line)
            except httpx.TransportError as exc:
                raise RetryableError(f"export stream broken ({type(exc).__name__})", endpoint=name) from None

    def _export_stream(self, name: str, params: httpx.QueryParams) -> Any:
        """The export's streamed 200, after the limiter and retries of its opening; an ApiError else."""

        def once() -> Any:
            self.limiter.acquire(name)
            request = self._http.build_request("GET", "/api/export/data.json", params=params)
            request.headers["Accept"] = "application/x-json-stream"
            try:
                response = self._http.send(request, stream=True)
            except httpx.TimeoutException as exc:
                raise RetryableError(f"timed out ({type(exc).__name__})", endpoint=name) from None
            except httpx.TransportError as exc:
                raise RetryableError(f"transport error ({type(exc).__name__})", endpoint=name) from None
            if response.status_code == 200:
                return contextlib.closing(response)
            response.read()
            response.close()
            raise self._throttled(name, self._error(name, response, bulk=False))

        return call_with_retries(once, self.retry)

    @staticmethod
    def _export_row(name: str, line: str) -> dict[str, Any]:
        """One line of an export: a JSON object, or a retryable error (never a silently skipped person)."""
        try:
            row = json.loads(line)
        except ValueError:
            raise RetryableError("unreadable export line", endpoint=name, code=UNEXPECTED) from None
        if not isinstance(row, dict):
            raise RetryableError("export line is not an object", endpoint=name, code=UNEXPECTED)
        return row

    # ---- project configuration --------------------------------------------------------------------

    def get_user_fields(self) -> dict[str, str]:
        """``GET /api/users/getFields``: each user field and the type Iterable holds it as."""
        name = "users/getFields"
        response = self._request(name, "GET", "/api/users/getFields")
        return self._parse(name, UserFieldsResponse, self._json(name, response)).fields

    def get_channels(self) -> list[Channel]:
        """``GET /api/channels``."""
        name = "channels"
        response = self._request(name, "GET", "/api/channels")
        return self._parse(name, ChannelsResponse, self._json(name, response)).channels

    def get_message_types(self) -> list[MessageType]:
        """``GET /api/messageTypes``."""
        name = "messageTypes"
        response = self._request(name, "GET", "/api/messageTypes")
        return self._parse(name, MessageTypesResponse, self._json(name, response)).message_types
