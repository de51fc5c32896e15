"""The Marketo stand-in's memory: leads, the activity log, tokens, limits, injected faults and call counts."""

from __future__ import annotations

import bisect
import random
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from dev.standins.marketo import paging

UNSUBSCRIBE_EMAIL = 9
DATA_VALUE_CHANGE = 13
UNSUBSCRIBED_FIELD_ID = 49
EMAIL_FIELD_ID = 48  # the stand-in's own id for Email Address (each Marketo instance numbers its fields)
NOISE_TYPES = (1, 2, 7, 10, 11)  # visit web page, fill out form, delivered, open, click
NOISE_FIELDS = ("firstName", "leadScore", "title")
LEAD_FIELDS = ("id", "email", "unsubscribed", "firstName", "lastName", "createdAt", "updatedAt")
DEFAULT_LEAD_FIELDS = ("id", "firstName", "lastName", "email", "updatedAt", "createdAt")
How = Literal["link", "form", "salesforce"]

_HOW_SOURCE = {
    "link": ("Unsubscribe link", "Email"),
    "form": ("Form fill-out", "Web form fillout"),
    "salesforce": ("Email Opt Out sync", "sfdc"),
}


class SandboxOptions(BaseModel):
    """How the stand-in behaves; Marketo's documented limits are the defaults."""

    client_id: str = "sandbox-client"
    client_secret: str = "sandbox-secret"
    token_ttl: int = 3600
    scan_window: int = Field(default=300, ge=1, le=300)
    rate_limit: int = 100
    rate_window_seconds: float = 20.0
    max_concurrent: int = 10
    daily_quota: int = 50_000
    enforce_limits: bool = True
    latency: float = 0.0
    seed: int = 0


class Faults(BaseModel):
    """Faults to inject; counts are "the next N REST calls", consumed as calls arrive."""

    expire_tokens_after: int | None = None  # after N more REST calls every token expires (0: now)
    invalidate_tokens: bool = False  # drop every token: the next call answers 601
    rate_limited_calls: int = 0  # 606
    concurrency_limited_calls: int = 0  # 615
    access_denied_calls: int = 0  # 603
    server_error_calls: int = 0  # HTTP 503
    quota_exhausted: bool = False  # 607 on every call until cleared


class MarketoError(Exception):
    """A Marketo error to answer as HTTP 200 ``success: false`` (or ``http_status`` when set)."""

    def __init__(self, code: str, message: str, http_status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


@dataclass(order=True)
class _Activity:
    date: datetime
    seq: int
    lead_id: int = field(compare=False)
    type_id: int = field(compare=False)
    guid: str = field(compare=False)
    primary_value: str | None = field(compare=False, default=None)
    primary_value_id: int | None = field(compare=False, default=None)
    attributes: list[dict[str, Any]] = field(compare=False, default_factory=list)
    fields: list[dict[str, Any]] = field(compare=False, default_factory=list)

    def as_activity(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": self.seq,
            "marketoGUID": self.guid,
            "leadId": self.lead_id,
            "activityDate": self.date.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "activityTypeId": self.type_id,
            "attributes": self.attributes,
        }
        if self.primary_value is not None:
            row["primaryAttributeValue"] = self.primary_value
            row["primaryAttributeValueId"] = self.primary_value_id
        return row

    def as_lead_change(self, names: set[str]) -> dict[str, Any] | None:
        changed = [f for f in self.fields if f["name"].lower() in names]
        if self.type_id != DATA_VALUE_CHANGE or not changed:
            return None
        row = self.as_activity()
        row.pop("primaryAttributeValue", None)
        row.pop("primaryAttributeValueId", None)
        row["fields"] = changed
        return row


class MarketoSandbox:
    """Thread-safe state behind the stand-in's routes, also driven directly from tests (Python API)."""

    def __init__(self, options: SandboxOptions | None = None) -> None:
        self.options = options or SandboxOptions()
        self._lock = threading.Lock()
        self.reset()

    # Seeding

    def reset(self) -> None:
        """Forget leads, activities, tokens, faults and counts; options stay."""
        with self._lock:
            self._leads: dict[int, dict[str, Any]] = {}
            self._log: list[_Activity] = []
            self._seq = 0
            self._tokens: dict[str, float] = {}
            self.faults = Faults()
            self._calls: Counter[str] = Counter()
            self._errors: Counter[str] = Counter()
            self._recent: deque[float] = deque()
            self._day_count = 0
            self._in_flight = 0
            self._max_in_flight = 0
            self._tokens_issued = 0
            self._random = random.Random(self.options.seed)

    def add_lead(self, lead_id: int, email: str, unsubscribed: bool = False, **extra: Any) -> None:
        """Add or replace a lead."""
        now = _stamp(datetime.now(UTC))
        with self._lock:
            self._leads[lead_id] = {
                "id": lead_id,
                "email": email,
                "unsubscribed": unsubscribed,
                "firstName": extra.get("firstName"),
                "lastName": extra.get("lastName"),
                "createdAt": now,
                "updatedAt": now,
            }

    def add_leads(self, leads: list[dict[str, Any]]) -> int:
        """Add leads given as ``{"id", "email", "unsubscribed"?}`` mappings; returns how many."""
        for lead in leads:
            self.add_lead(int(lead["id"]), str(lead["email"]), bool(lead.get("unsubscribed", False)))
        return len(leads)

    def delete_lead(self, lead_id: int) -> None:
        """Delete a lead (or merge it away): its activities stay in the log, GET leads no longer finds it."""
        with self._lock:
            self._leads.pop(lead_id, None)

    def lead(self, lead_id: int) -> dict[str, Any] | None:
        """A copy of a lead, or None."""
        with self._lock:
            found = self._leads.get(lead_id)
            return dict(found) if found else None

    def unsubscribe(self, lead_id: int, how: How = "link", at: datetime | None = None) -> list[str]:
        """The lead unsubscribes; returns the GUIDs of the activities logged.

        ``link`` logs an Unsubscribe Email (type 9) and a Data Value Change of ``unsubscribed``;
        ``form`` and ``salesforce`` log only the change. As in Marketo, a lead already unsubscribed logs
        no change (the value does not change), though a link click still logs type 9.
        """
        if how not in _HOW_SOURCE:
            raise ValueError(f"how must be one of {sorted(_HOW_SOURCE)}")
        moment = _aware(at)
        reason, source = _HOW_SOURCE[how]
        with self._lock:
            lead = self._leads.get(lead_id)
            if lead is None:
                raise KeyError(f"no lead {lead_id}")
            guids = []
            if how == "link":
                guids.append(
                    self._append(
                        moment,
                        lead_id,
                        UNSUBSCRIBE_EMAIL,
                        primary=("Newsletter.Email", 1001),
                        attributes=[{"name": "Client IP Address", "value": "198.51.100.7"}],
                    )
                )
            if not lead["unsubscribed"]:
                guids.append(
                    self._append(
                        moment,
                        lead_id,
                        DATA_VALUE_CHANGE,
                        primary=("Unsubscribed", UNSUBSCRIBED_FIELD_ID),
                        attributes=_change_attributes("true", "false", reason, source),
                        fields=[
                            {
                                "id": UNSUBSCRIBED_FIELD_ID,
                                "name": "unsubscribed",
                                "newValue": "true",
                                "oldValue": "false",
                            }
                        ],
                    )
                )
                lead["unsubscribed"] = True
                lead["updatedAt"] = _stamp(moment)
            return guids

    def change_email(self, lead_id: int, email: str, at: datetime | None = None) -> str:
        """The lead's address changes (a form, a sales rep): a Data Value Change of ``email``."""
        moment = _aware(at)
        with self._lock:
            lead = self._leads.get(lead_id)
            if lead is None:
                raise KeyError(f"no lead {lead_id}")
            old = str(lead.get("email") or "")
            guid = self._append(
                moment,
                lead_id,
                DATA_VALUE_CHANGE,
                primary=("Email Address", EMAIL_FIELD_ID),
                attributes=_change_attributes(email, old, "Form fill", "Web form fillout"),
                fields=[{"id": EMAIL_FIELD_ID, "name": "email", "newValue": email, "oldValue": old}],
            )
            lead["email"] = email
            lead["updatedAt"] = _stamp(moment)
            return guid

    def resubscribe(self, lead_id: int, at: datetime | None = None) -> str | None:
        """The lead subscribes again (a form, a sales rep): a Data Value Change of ``unsubscribed`` to
        false, as Marketo logs it; None when the lead was not unsubscribed (nothing changes)."""
        moment = _aware(at)
        with self._lock:
            lead = self._leads.get(lead_id)
            if lead is None:
                raise KeyError(f"no lead {lead_id}")
            if not lead["unsubscribed"]:
                return None
            guid = self._append(
                moment,
                lead_id,
                DATA_VALUE_CHANGE,
                primary=("Unsubscribed", UNSUBSCRIBED_FIELD_ID),
                attributes=_change_attributes("false", "true", "Form fill", "Web form fillout"),
                fields=[
                    {
                        "id": UNSUBSCRIBED_FIELD_ID,
                        "name": "unsubscribed",
                        "newValue": "false",
                        "oldValue": "true",
                    }
                ],
            )
            lead["unsubscribed"] = False
            lead["updatedAt"] = _stamp(moment)
            return guid

    def add_noise(self, n: int, at: datetime | None = None) -> int:
        """Log ``n`` activities that are not unsubscribes (other types, changes of other fields)."""
        moment = _aware(at)
        with self._lock:
            lead_ids = sorted(self._leads) or list(range(1, 11))
            for _ in range(n):
                lead_id = self._random.choice(lead_ids)
                if self._random.random() < 0.25:
                    name = self._random.choice(NOISE_FIELDS)
                    new, old = str(self._random.randint(1, 99)), str(self._random.randint(1, 99))
                    self._append(
                        moment,
                        lead_id,
                        DATA_VALUE_CHANGE,
                        primary=(name, 100 + NOISE_FIELDS.index(name)),
                        attributes=_change_attributes(new, old, "Changed", "Web service API"),
                        fields=[{"id": 100, "name": name, "newValue": new, "oldValue": old}],
                    )
                else:
                    self._append(moment, lead_id, self._random.choice(NOISE_TYPES), primary=("Asset", 2002))
        return n

    def _append(
        self,
        moment: datetime,
        lead_id: int,
        type_id: int,
        *,
        primary: tuple[str, int] | None = None,
        attributes: list[dict[str, Any]] | None = None,
        fields: list[dict[str, Any]] | None = None,
    ) -> str:
        self._seq += 1
        activity = _Activity(
            date=moment,
            seq=self._seq,
            lead_id=lead_id,
            type_id=type_id,
            guid=str(uuid.UUID(int=self._random.getrandbits(128))),
            primary_value=primary[0] if primary else None,
            primary_value_id=primary[1] if primary else None,
            attributes=attributes or [],
            fields=fields or [],
        )
        bisect.insort(self._log, activity)
        return activity.guid

    # Tokens

    def issue_token(self, client_id: str, client_secret: str) -> tuple[str, int] | None:
        """The valid token with its remaining life (Marketo hands back the same one), or a new one."""
        if client_id != self.options.client_id or client_secret != self.options.client_secret:
            return None
        now = time.monotonic()
        with self._lock:
            for token, expires in self._tokens.items():
                if expires > now:
                    return token, int(expires - now)
            token = f"{uuid.UUID(int=self._random.getrandbits(128))}:sb"
            self._tokens[token] = now + self.options.token_ttl
            self._tokens_issued += 1
            return token, self.options.token_ttl

    def expire_tokens(self) -> None:
        """Every issued token is expired from now on (the next REST call answers 602)."""
        with self._lock:
            self._expire_tokens()

    def _expire_tokens(self) -> None:
        now = time.monotonic()
        for token in self._tokens:
            self._tokens[token] = min(self._tokens[token], now)

    def set_faults(self, **changes: Any) -> Faults:
        """Merge fault settings (see ``Faults``) and return them all."""
        with self._lock:
            self.faults = self.faults.model_copy(update=Faults(**changes).model_dump(include=set(changes)))
            if self.faults.invalidate_tokens:
                self._tokens.clear()
                self.faults.invalidate_tokens = False
            if self.faults.expire_tokens_after == 0:
                self._expire_tokens()
                self.faults.expire_tokens_after = None
            return self.faults.model_copy()

    # Every REST call passes here first

    def admit(self, endpoint: str, authorization: str | None) -> None:
        """Count the call, check its token, limits and faults; raise ``MarketoError`` to refuse it."""
        with self._lock:
            self._calls[endpoint] += 1
            try:
                self._admit(authorization)
            except MarketoError as err:
                self._errors[err.code] += 1
                raise
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def release(self) -> None:
        """The admitted call has been answered."""
        with self._lock:
            self._in_flight -= 1

    def _admit(self, authorization: str | None) -> None:
        faults, options = self.faults, self.options
        if faults.server_error_calls > 0:
            faults.server_error_calls -= 1
            raise MarketoError("503", "Service Unavailable", http_status=503)
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise MarketoError("600", "Access token missing")
        expires = self._tokens.get(token)
        now = time.monotonic()
        if expires is None:
            raise MarketoError("601", "Access token invalid")
        if expires <= now:
            raise MarketoError("602", "Access token expired")
        if faults.quota_exhausted or (options.enforce_limits and self._day_count >= options.daily_quota):
            raise MarketoError("607", "Daily quota reached")
        if faults.access_denied_calls > 0:
            faults.access_denied_calls -= 1
            raise MarketoError("603", "Access denied")
        while self._recent and self._recent[0] <= now - options.rate_window_seconds:
            self._recent.popleft()
        if faults.rate_limited_calls > 0 or (
            options.enforce_limits and len(self._recent) >= options.rate_limit
        ):
            faults.rate_limited_calls = max(0, faults.rate_limited_calls - 1)
            raise MarketoError("606", f"Max rate limit '{options.rate_limit}' exceeded with in '20' secs")
        if faults.concurrency_limited_calls > 0 or (
            options.enforce_limits and self._in_flight >= options.max_concurrent
        ):
            faults.concurrency_limited_calls = max(0, faults.concurrency_limited_calls - 1)
            raise MarketoError("615", f"Concurrent access limit '{options.max_concurrent}' reached")
        self._recent.append(now)
        self._day_count += 1
        if faults.expire_tokens_after is not None:
            faults.expire_tokens_after -= 1
            if faults.expire_tokens_after <= 0:
                # This call still passes; the ones after it find their token expired.
                faults.expire_tokens_after = None
                self._expire_tokens()

    # Reads

    def scan(self, token: str, window: int) -> tuple[list[_Activity], str, bool]:
        """The next ``window`` activities of every type after ``token``, the next token, and more?"""
        position = paging.decode(token)
        with self._lock:
            start = bisect.bisect_right(self._log, _Activity(position[0], position[1], 0, 0, ""))
            scanned = self._log[start : start + window]
            more = start + window < len(self._log)
        if not scanned:
            return [], token, False
        last = scanned[-1]
        return scanned, paging.encode((last.date, last.seq)), more

    def leads_by(self, filter_type: str, values: list[str]) -> list[dict[str, Any]]:
        """Leads whose ``id`` or ``email`` is among ``values``, by id."""
        with self._lock:
            leads = list(self._leads.values())
        if filter_type == "id":
            wanted = {v for v in values if v.lstrip("-").isdigit()}
            found = [lead for lead in leads if str(lead["id"]) in wanted]
        else:
            lowered = {v.lower() for v in values}
            found = [lead for lead in leads if lead["email"].lower() in lowered]
        return [dict(lead) for lead in sorted(found, key=lambda lead: lead["id"])]

    def stats(self) -> dict[str, Any]:
        """Calls per endpoint, refusals per error code, tokens issued, highest concurrency seen."""
        with self._lock:
            return {
                "calls": dict(self._calls),
                "errors": dict(self._errors),
                "tokens_issued": self._tokens_issued,
                "max_in_flight": self._max_in_flight,
                "activities": len(self._log),
                "leads": len(self._leads),
            }

    def calls(self, endpoint: str) -> int:
        """How many calls reached ``endpoint`` (e.g. ``"GET /rest/v1/activities.json"``)."""
        with self._lock:
            return self._calls[endpoint]


def request_id() -> str:
    """A Marketo-looking request id."""
    return f"{secrets.token_hex(2)}#{secrets.token_hex(6)}"


def _change_attributes(new: str, old: str, reason: str, source: str) -> list[dict[str, Any]]:
    return [
        {"name": "New Value", "value": new},
        {"name": "Old Value", "value": old},
        {"name": "Reason", "value": reason},
        {"name": "Source", "value": source},
    ]


def _aware(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
