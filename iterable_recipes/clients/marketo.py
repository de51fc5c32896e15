"""Marketo REST client for the opt-out poll: OAuth token, paging activities and lead changes, leads by id.

Endpoints (reference/marketo/swagger-mapi.json, swagger-identity.json):

    GET {identity}/oauth/token                  client-credentials token (never logged: it holds the secret)
    GET /rest/v1/activities/pagingtoken.json    a start cursor from a datetime
    GET /rest/v1/activities.json                activities of given types, paged by nextPageToken
    GET /rest/v1/activities/leadchanges.json    Data Value Changes of given fields, paged the same way
    GET /rest/v1/leads.json                     leads by id, at most 300 ids a call

Marketo answers most errors as HTTP 200 with ``success: false``; ``_error_for`` maps those codes onto
the project's error tree. The instance's limits (100 calls per 20 s, 10 concurrent) are shared with
every other integration, so this client keeps to a share of them: a ``RateLimiter`` named
``"marketo"`` (50 per 20 s by default) and a semaphore (5 in flight by default).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx

from iterable_recipes.clients.errors import ApiError, PermanentError, QuotaExhaustedError, RetryableError
from iterable_recipes.clients.limiter import InMemoryLimiter, Rate, RateLimiter
from iterable_recipes.clients.marketo_models import Activity, ActivityPage, Attribute, Lead, LeadChangeField
from iterable_recipes.clients.retry import DEFAULT_RETRY, RetryPolicy, call_with_retries

__all__ = [
    "LIMITER_NAME",
    "MAX_ACTIVITY_TYPES",
    "MAX_LEAD_IDS",
    "Activity",
    "ActivityPage",
    "Attribute",
    "Lead",
    "LeadChangeField",
    "MarketoClient",
]

log = logging.getLogger(__name__)

LIMITER_NAME = "marketo"
MAX_LEAD_IDS = 300
MAX_ACTIVITY_TYPES = 10
TOKEN_MARGIN_SECONDS = 60.0
TOKEN_CODES = frozenset({"601", "602"})
RATE_LIMIT_CODE = "606"
# Marketo's advice for 606 is to wait out the 20 s window; the retry policy caps it (tiny in tests).
RATE_LIMIT_WAIT_SECONDS = 20.0

# Our own wording per code: Marketo's message text is not copied, so no record value can leak.
_RETRYABLE = {
    "604": "request timed out",
    "606": "rate limit reached (100 calls per 20 s per instance, shared by all integrations)",
    "608": "API temporarily unavailable",
    "611": "system error",
    "615": "concurrent access limit reached (10 calls in flight per instance)",
    "713": "transient error",
}
_PERMANENT = {
    "603": "access denied: the API user's role or IP allow-list refuses this call",
    "1003": "invalid request data",
}


class MarketoClient:
    """A synchronous, thread-safe Marketo REST client; use it as a context manager or call ``close()``."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        identity_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        limiter: RateLimiter | None = None,
        max_concurrent: int = 5,
        calls_per_20s: int = 50,
        timeout: float = 30,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Build a client; ``limiter`` defaults to an in-process one at ``calls_per_20s``.

        Pass a shared limiter when several processes call the same instance. ``clock`` (monotonic
        seconds) is only replaced by tests of token expiry.
        """
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self._base_url = base_url.rstrip("/")
        self._identity_url = (identity_url or f"{self._base_url}/identity").rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._http = httpx.Client(transport=transport, timeout=timeout)
        self._limiter: RateLimiter = limiter or InMemoryLimiter(
            {LIMITER_NAME: Rate(limit=calls_per_20s, seconds=20)}
        )
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._retry = retry or DEFAULT_RETRY
        self._clock = clock
        self._token_lock = threading.Lock()
        self._token: str | None = None
        self._token_refresh_at = 0.0

    def __enter__(self) -> MarketoClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # Public API

    def authenticate(self) -> None:
        """Get an access token with the client credentials: proves them without reading any lead."""
        self._access_token()

    def get_paging_token(self, since: datetime) -> str:
        """A cursor for activities at or after ``since`` (a naive datetime is taken as UTC)."""
        moment = since if since.tzinfo else since.replace(tzinfo=UTC)
        stamp = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        path = "/rest/v1/activities/pagingtoken.json"
        body = self._call(path, {"sinceDatetime": stamp})
        token = body.get("nextPageToken")
        if not isinstance(token, str) or not token:
            raise PermanentError("answer holds no nextPageToken", endpoint=path)
        return token

    def iter_activities(self, token: str, activity_type_ids: Sequence[int] = (9,)) -> Iterator[ActivityPage]:
        """Yield every page of activities of the given types from ``token``, empty pages included.

        Store each page's ``next_page_token`` once its items are handled; the last page (``more_result``
        false) carries the token the next poll starts from.
        """
        if not 1 <= len(activity_type_ids) <= MAX_ACTIVITY_TYPES:
            raise ValueError(f"between 1 and {MAX_ACTIVITY_TYPES} activity type ids per call")
        types = ",".join(str(int(t)) for t in activity_type_ids)
        yield from self._pages("/rest/v1/activities.json", token, {"activityTypeIds": types})

    def iter_lead_changes(
        self, token: str, fields: Sequence[str] = ("unsubscribed",)
    ) -> Iterator[ActivityPage]:
        """Yield every page of Data Value Changes to ``fields`` from ``token``, empty pages included."""
        if not fields:
            raise ValueError("at least one field name")
        yield from self._pages("/rest/v1/activities/leadchanges.json", token, {"fields": ",".join(fields)})

    def get_leads_by_ids(
        self, ids: Iterable[int], fields: Sequence[str] = ("id", "email", "unsubscribed")
    ) -> list[Lead]:
        """The leads among ``ids`` that exist (unknown ids are simply absent), 300 ids per call."""
        unique = list(dict.fromkeys(int(i) for i in ids))
        wanted = list(dict.fromkeys(["id", *fields]))
        leads: list[Lead] = []
        for start in range(0, len(unique), MAX_LEAD_IDS):
            chunk = unique[start : start + MAX_LEAD_IDS]
            params = {
                "filterType": "id",
                "filterValues": ",".join(str(i) for i in chunk),
                "fields": ",".join(wanted),
            }
            body = self._call("/rest/v1/leads.json", params)
            leads.extend(Lead.model_validate(row) for row in body.get("result") or [])
        return leads

    # Paging

    def _pages(self, path: str, token: str, params: dict[str, str]) -> Iterator[ActivityPage]:
        while True:
            body = self._call(path, {**params, "nextPageToken": token})
            next_token = body.get("nextPageToken") or token
            more = bool(body.get("moreResult"))
            items = [Activity.model_validate(row) for row in body.get("result") or []]
            yield ActivityPage(items=items, next_page_token=next_token, more_result=more)
            if not more:
                return
            if next_token == token:
                # Following the same token again would loop for ever.
                raise PermanentError("moreResult is true but the paging token did not move", endpoint=path)
            token = next_token

    # Requests

    def _call(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        return call_with_retries(lambda: self._attempt(path, params), self._retry, on_retry=self._on_retry)

    def _on_retry(self, attempt: int, error: RetryableError, delay: float) -> None:
        if error.code == RATE_LIMIT_CODE:
            # Every thread using this limiter holds back, not only the call that was refused.
            self._limiter.slow_down(LIMITER_NAME, delay)
        log.warning("Marketo attempt %d failed (%s); retrying in %.2fs", attempt, error, delay)

    def _attempt(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        token = self._access_token()
        body = self._send(path, params, token)
        code = _error_code(body)
        if code in TOKEN_CODES:
            # Expired or revoked under us: renew once and resend, outside the retry budget.
            self._forget_token(token)
            body = self._send(path, params, self._access_token())
            code = _error_code(body)
            if code in TOKEN_CODES:
                raise RetryableError("access token refused right after renewal", endpoint=path, code=code)
        if code is not None:
            raise _error_for(code, path)
        return body

    def _send(self, path: str, params: dict[str, str], token: str) -> dict[str, Any]:
        self._limiter.acquire(LIMITER_NAME)
        with self._slots:
            try:
                response = self._http.get(
                    f"{self._base_url}{path}", params=params, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.HTTPError as exc:
                raise RetryableError(f"transport error ({type(exc).__name__})", endpoint=path) from exc
        return _json_body(response, path)

    # Token

    def _access_token(self) -> str:
        with self._token_lock:
            if self._token is None or self._clock() >= self._token_refresh_at:
                self._token, self._token_refresh_at = self._fetch_token()
            return self._token

    def _forget_token(self, token: str) -> None:
        with self._token_lock:
            # Another thread may already have renewed it; only drop the token that failed.
            if self._token == token:
                self._token = None

    def _fetch_token(self) -> tuple[str, float]:
        endpoint = "identity/oauth/token"
        params = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
        }
        try:
            response = self._http.get(f"{self._identity_url}/oauth/token", params=params)
        except httpx.HTTPError as exc:
            # from None: the chained exception's request would carry the URL, secret included.
            raise RetryableError(f"transport error ({type(exc).__name__})", endpoint=endpoint) from None
        status = response.status_code
        if status >= 500 or status in (408, 429):
            raise RetryableError("identity service unavailable", endpoint=endpoint, status=status)
        if status != 200:
            raise PermanentError("identity refused the client credentials", endpoint=endpoint, status=status)
        try:
            data = response.json()
            token = str(data["access_token"])
            expires_in = float(data.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise PermanentError("identity answer holds no access_token", endpoint=endpoint) from None
        now = self._clock()
        # Renew a minute early; a token already inside that minute (Marketo hands back the same token
        # with its remaining life) is used until it runs out, and a 602 renews it then.
        if expires_in > TOKEN_MARGIN_SECONDS:
            return token, now + expires_in - TOKEN_MARGIN_SECONDS
        return token, now + max(0.0, expires_in)


def _json_body(response: httpx.Response, path: str) -> dict[str, Any]:
    status = response.status_code
    if status >= 500 or status in (408, 429):
        raise RetryableError("server error", endpoint=path, status=status)
    if status == 414:
        raise PermanentError("request URI too long (over 8 KB)", endpoint=path, status=status)
    if status != 200:
        raise PermanentError("unexpected HTTP status", endpoint=path, status=status)
    try:
        body = response.json()
    except ValueError:
        raise RetryableError("answer is not JSON", endpoint=path, status=status) from None
    if not isinstance(body, dict):
        raise RetryableError("answer is not a JSON object", endpoint=path, status=status)
    return body


def _error_code(body: dict[str, Any]) -> str | None:
    """The first error code of a ``success: false`` body, or None when the call succeeded."""
    if body.get("success", True) is not False:
        return None
    errors = body.get("errors") or []
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    return str(first.get("code", "unknown"))


def _error_for(code: str, path: str) -> ApiError:
    if code in _RETRYABLE:
        wait = RATE_LIMIT_WAIT_SECONDS if code == RATE_LIMIT_CODE else None
        return RetryableError(_RETRYABLE[code], endpoint=path, code=code, retry_after=wait)
    if code == "607":
        return QuotaExhaustedError(
            "daily API quota reached; stop and resume after it resets (12:00 AM US Central)",
            endpoint=path,
            code=code,
        )
    return PermanentError(_PERMANENT.get(code, "request refused"), endpoint=path, code=code)
