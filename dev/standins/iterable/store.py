"""The sandbox's state (users, events, field types, counters) behind one lock, and its control methods."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dev.standins.iterable.faults import FaultBook, FaultSpec
from dev.standins.iterable.fields import check_types, merge_fields, mismatch_message
from dev.standins.iterable.options import SandboxOptions
from dev.standins.iterable.ratelimit import SlidingWindows

SUBSCRIPTION_ARRAYS = (
    "emailListIds",
    "unsubscribedChannelIds",
    "unsubscribedMessageTypeIds",
    "subscribedMessageTypeIds",
)


_stamp_cache: tuple[int, str] = (0, "")


def iterable_now() -> str:
    """Now in Iterable's date format, ``2024-01-31 12:00:00 +00:00`` (formatted once per second)."""
    global _stamp_cache
    second = int(time.time())
    if _stamp_cache[0] != second:
        _stamp_cache = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%d %H:%M:%S +00:00"))
    return _stamp_cache[1]


@dataclass(slots=True)
class User:
    """One profile; ``subs`` holds the four subscription arrays by their Iterable names."""

    email: str
    user_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    subs: dict[str, list[int]] = field(default_factory=lambda: {name: [] for name in SUBSCRIPTION_ARRAYS})
    created_by: str = ""
    signup_date: str = field(default_factory=iterable_now)
    updated_at: str = field(default_factory=iterable_now)

    def api_view(self) -> dict[str, Any]:
        """The ``user`` object of GET users/getByEmail: managed fields live inside dataFields."""
        data = dict(self.data)
        data.update(self.subs)
        data["email"] = self.email
        data["profileUpdatedAt"] = self.updated_at
        data["signupDate"] = self.signup_date
        view: dict[str, Any] = {"email": self.email, "dataFields": data, "profileUpdatedAt": self.updated_at}
        if self.user_id is not None:
            view["userId"] = self.user_id
            data["userId"] = self.user_id
        return view

    def control_view(self) -> dict[str, Any]:
        """The control API's view: custom fields apart from the subscription arrays."""
        view: dict[str, Any] = {"email": self.email, "userId": self.user_id, "dataFields": dict(self.data)}
        view.update({name: list(ids) for name, ids in self.subs.items()})
        view.update(createdBy=self.created_by, profileUpdatedAt=self.updated_at, signupDate=self.signup_date)
        return view


@dataclass(slots=True)
class ProfileWrite:
    """A profile update accepted but, like Iterable's, applied later."""

    endpoint: str
    email: str
    user_id: str | None
    fields: dict[str, Any]
    merge_nested: bool
    # Subscription arrays this write replaces (users/bulkUpdate writes some of them, see fields.py).
    subs: dict[str, list[int]] = field(default_factory=dict)
    # Static list memberships this write changes: (list id, member after it), from lists/(un)subscribe.
    list_changes: tuple[tuple[int, bool], ...] = ()


class IterableSandbox:
    """All state of one sandbox Iterable. Every method takes the lock, so tests may call from any thread."""

    def __init__(self, options: SandboxOptions | None = None) -> None:
        self.initial_options = (options or SandboxOptions()).copy()
        self.lock = threading.RLock()
        # Set while API requests may be answered; cleared by hold() (tests line up concurrent clients).
        self.answering = threading.Event()
        self.answering.set()
        self._reset_state()

    def _reset_state(self) -> None:
        self.options = self.initial_options.copy()
        self.users_by_email: dict[str, User] = {}
        self.email_by_user_id: dict[str, str] = {}
        self.user_field_types: dict[str, str] = {}
        self.event_field_types: dict[str, dict[str, str]] = defaultdict(dict)
        self.events_by_id: dict[str, dict[str, Any]] = {}
        self.requests: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.event_writes: dict[str, int] = defaultdict(int)
        self.profile_writes: dict[str, int] = defaultdict(int)
        self.subscription_writes: dict[str, int] = defaultdict(int)
        self.users_created: dict[str, int] = defaultdict(int)
        self.list_writes: dict[str, int] = defaultdict(int)
        # Static lists by id (GET /api/lists): id, name, description, createdAt (epoch ms), listType.
        self.lists: dict[int, dict[str, Any]] = {}
        self._list_ids = itertools.count(1001)
        # Per person, in order: each event and subscription write as it took effect (control API only;
        # tuples, as a drain bench writes 100,000 events): (order, epoch s, kind, detail name, detail).
        self.writes_by_email: dict[str, list[tuple[int, float, str, str, Any]]] = defaultdict(list)
        self._write_order = itertools.count(1)
        self._pending: list[tuple[float, int, ProfileWrite]] = []
        # Changes the person makes right after our next look-up of them (change_after_lookup).
        self._after_lookup: dict[str, dict[str, list[int]]] = {}
        self._sequence = itertools.count()
        self.faults = FaultBook()
        self.windows = SlidingWindows()
        self._index_catalogue()

    def _index_catalogue(self) -> None:
        self.channels = {int(item["id"]): item for item in self.options.channels}
        self.message_types = {int(item["id"]): item for item in self.options.message_types}

    # -- state used by the endpoint modules (callers hold the lock) ------------------------------

    def find(self, email: str | None = None, user_id: str | None = None) -> User | None:
        """The applied user with this email or userId; call ``settle`` first."""
        if email is not None:
            return self.users_by_email.get(email.lower())
        if user_id is not None:
            key = self.email_by_user_id.get(user_id)
            return self.users_by_email.get(key) if key is not None else None
        return None

    def create_user(self, email: str, endpoint: str, user_id: str | None = None) -> User:
        """Make a new profile and count which endpoint made it."""
        user = User(email=email.lower(), user_id=user_id, created_by=endpoint)
        self.users_by_email[user.email] = user
        if user_id is not None:
            self.email_by_user_id[user_id] = user.email
        self.users_created[endpoint] += 1
        return user

    def set_user_id(self, user: User, user_id: str) -> None:
        """Give ``user`` this userId, releasing the old one."""
        if user.user_id == user_id:
            return
        if user.user_id is not None:
            self.email_by_user_id.pop(user.user_id, None)
        user.user_id = user_id
        self.email_by_user_id[user_id] = user.email

    def write_profile(self, write: ProfileWrite) -> None:
        """Apply now, or after ``profile_delay_seconds``: Iterable applies profile writes asynchronously."""
        self.profile_writes[write.email.lower()] += 1
        delay = self.options.profile_delay_seconds
        if delay > 0:
            heapq.heappush(self._pending, (time.monotonic() + delay, next(self._sequence), write))
        else:
            self._apply(write)

    def write_list(self, email: str, user_id: str | None, list_id: int, member: bool, endpoint: str) -> None:
        """Queue one static-list membership change; applied like profile writes (``profile_delay_seconds``
        later), creating the user when ``member`` and nobody has that address by then."""
        self.list_writes[email.lower()] += 1
        write = ProfileWrite(endpoint, email, user_id, {}, False, list_changes=((list_id, member),))
        delay = self.options.profile_delay_seconds
        if delay > 0:
            heapq.heappush(self._pending, (time.monotonic() + delay, next(self._sequence), write))
        else:
            self._apply(write)

    def _apply(self, write: ProfileWrite) -> None:
        user = self.users_by_email.get(write.email.lower())
        if user is None and write.list_changes and not any(member for _, member in write.list_changes):
            return  # a removal from a list never creates anyone (and the person is gone meanwhile)
        if user is None:
            user = self.create_user(write.email, write.endpoint, write.user_id)
        elif write.user_id is not None:
            self.set_user_id(user, write.user_id)
        merge_fields(user.data, write.fields, write.merge_nested)
        for name, ids in write.subs.items():
            user.subs[name] = list(ids)
        lists = user.subs["emailListIds"]
        for list_id, member in write.list_changes:
            if member and list_id not in lists:
                lists.append(list_id)
            elif not member and list_id in lists:
                lists.remove(list_id)
        user.updated_at = iterable_now()

    def settle(self, everything: bool = False) -> int:
        """Apply pending profile writes whose time has come (all of them with ``everything``)."""
        applied = 0
        now = time.monotonic()
        while self._pending and (everything or self._pending[0][0] <= now):
            self._apply(heapq.heappop(self._pending)[2])
            applied += 1
        return applied

    def looked_up(self, user: User) -> None:
        """A look-up of ``user`` was answered: apply the change armed for that moment, if any."""
        change = self._after_lookup.pop(user.email, None)
        if change is not None:
            # The person's own change (a preference centre, an SMS STOP), not an API write of ours.
            user.subs.update({name: list(ids) for name, ids in change.items()})
            user.updated_at = iterable_now()

    def touch_subscriptions(self, user: User) -> None:
        """Count a subscription write, note it in the person's write history and stamp the profile."""
        self.subscription_writes[user.email] += 1
        channels = tuple(user.subs["unsubscribedChannelIds"])
        self.note_write(user.email, "subscriptions", "unsubscribedChannelIds", channels)
        user.updated_at = iterable_now()

    def note_write(self, email: str, kind: str, name: str, detail: Any) -> None:
        """Add one write that took effect to ``email``'s history (an event's id, a channel array)."""
        entry = (next(self._write_order), time.time(), kind, name, detail)
        self.writes_by_email[email.lower()].append(entry)

    # -- control methods (also served under /_sandbox) ------------------------------------------

    def users(self) -> list[dict[str, Any]]:
        """Every applied user: custom dataFields, subscription arrays, who created it."""
        with self.lock:
            self.settle()
            return [user.control_view() for user in self.users_by_email.values()]

    def user(self, email: str) -> dict[str, Any] | None:
        """One applied user by email, or None."""
        with self.lock:
            self.settle()
            found = self.find(email=email)
            return found.control_view() if found is not None else None

    def forget_user(self, email: str) -> bool:
        """Delete one profile, as Iterable's user deletion does; a later write or seed re-creates it
        with a new ``signupDate``. Returns whether it existed."""
        with self.lock:
            self.settle()
            user = self.users_by_email.pop(email.lower(), None)
            if user is not None and user.user_id is not None:
                self.email_by_user_id.pop(user.user_id, None)
            return user is not None

    def seed_users(self, items: list[dict[str, Any]]) -> int:
        """Create or update users at once (no delay, not counted as API writes); returns how many.

        Their fields join the project's schema, so later writes of another type clash as they would.
        Raises ValueError, seeding nothing, when the items' field types clash.
        """
        with self.lock:
            self.settle()
            new_types: dict[str, str] = {}
            errors: dict[str, dict[str, Any]] = {}
            for item in items:
                check_types(
                    dict(item.get("dataFields") or {}), self.user_field_types, new_types, errors, "user"
                )
            if errors:
                raise ValueError(mismatch_message(errors))
            self.user_field_types.update(new_types)
            for item in items:
                email = str(item["email"]).lower()
                user = self.users_by_email.get(email) or self.create_user(email, "_sandbox/seed")
                if item.get("userId") is not None:
                    self.set_user_id(user, str(item["userId"]))
                merge_fields(user.data, dict(item.get("dataFields") or {}), False)
                for name in SUBSCRIPTION_ARRAYS:
                    if item.get(name) is not None:
                        user.subs[name] = [int(x) for x in item[name]]
            return len(items)

    def change_after_lookup(self, email: str, **arrays: list[int]) -> None:
        """Replace these subscription arrays once the next look-up of ``email`` has been answered.

        Models a person changing their subscriptions between a caller's read and its write: the
        answer still shows the old arrays, every later request sees the new ones.
        """
        unknown = set(arrays) - set(SUBSCRIPTION_ARRAYS)
        if unknown:
            raise ValueError(f"not subscription arrays: {sorted(unknown)}")
        with self.lock:
            self._after_lookup[email.lower()] = {name: [int(x) for x in ids] for name, ids in arrays.items()}

    def write_history(self, email: str) -> list[dict[str, Any]]:
        """The event and subscription writes that took effect for ``email``, oldest first."""
        with self.lock:
            entries = list(self.writes_by_email.get(email.lower(), []))
        return [
            {"order": order, "at": at, "kind": kind, name: list(value) if kind == "subscriptions" else value}
            for order, at, kind, name, value in entries
        ]

    def create_list(self, name: str, description: str | None = None, list_type: str = "Standard") -> int:
        """Make a list (a static ``Standard`` one unless told) and return its id."""
        with self.lock:
            list_id = next(self._list_ids)
            item = {"id": list_id, "name": name, "createdAt": int(time.time() * 1000), "listType": list_type}
            if description is not None:
                item["description"] = description
            self.lists[list_id] = item
            return list_id

    def list_members(self, list_id: int) -> list[str]:
        """The addresses of the applied members of a list, sorted (what GET lists/getUsers answers)."""
        with self.lock:
            self.settle()
            return sorted(u.email for u in self.users_by_email.values() if list_id in u.subs["emailListIds"])

    def events(self) -> dict[str, dict[str, Any]]:
        """Every stored event by id."""
        with self.lock:
            return {key: dict(event) for key, event in self.events_by_id.items()}

    def stats(self) -> dict[str, Any]:
        """Counters: requests per endpoint and status, writes per event id and per user, users created."""
        with self.lock:
            self.settle()
            return {
                "requests": {endpoint: dict(by_status) for endpoint, by_status in self.requests.items()},
                "event_writes": dict(self.event_writes),
                "profile_writes": dict(self.profile_writes),
                "subscription_writes": dict(self.subscription_writes),
                "users_created": dict(self.users_created),
                "list_writes": dict(self.list_writes),
                "pending_profile_writes": len(self._pending),
                "users": len(self.users_by_email),
                "events": len(self.events_by_id),
            }

    def count_request(self, endpoint: str, status: int | str) -> None:
        """Record one answered (or dropped) request."""
        with self.lock:
            self.requests[endpoint][str(status)] += 1

    def set_faults(self, spec: FaultSpec | None = None, **fields: Any) -> None:
        """Install a fault spec (a FaultSpec, or its fields as keywords)."""
        with self.lock:
            self.faults.set(spec if spec is not None else FaultSpec(**fields))

    def clear_faults(self) -> None:
        """Remove every fault, outages included."""
        with self.lock:
            self.faults.clear()

    def hold(self) -> None:
        """Hold every API request, once read, until release(): its client waits, as on a stalled server."""
        self.answering.clear()

    def release(self) -> None:
        """Let held and later API requests through."""
        self.answering.set()

    def flush(self) -> int:
        """Apply every pending profile write now; returns how many."""
        with self.lock:
            return self.settle(everything=True)

    def reset(self) -> None:
        """Back to a fresh sandbox with the options it was created with."""
        self.answering.set()
        with self.lock:
            self._reset_state()

    def set_options(self, **changes: Any) -> dict[str, Any]:
        """Change options at runtime (profile_delay_seconds, limits_enabled, rate_limits, ...)."""
        with self.lock:
            for name, value in changes.items():
                if not hasattr(self.options, name):
                    raise ValueError(f"unknown option {name!r}")
                if name == "rate_limits":
                    value = self.options.rate_limits | dict(value)
                setattr(self.options, name, value)
            if "channels" in changes or "message_types" in changes:
                self._index_catalogue()
            if "limits_enabled" in changes or "rate_limits" in changes:
                self.windows.clear()
            return self.describe_options()

    def describe_options(self) -> dict[str, Any]:
        """The current options, without the API key."""
        with self.lock:
            options = self.options
            return {
                "limits_enabled": options.limits_enabled,
                "rate_limits": dict(options.rate_limits),
                "max_body_bytes": options.max_body_bytes,
                "profile_delay_seconds": options.profile_delay_seconds,
                "create_new_fields_default": options.create_new_fields_default,
                "opt_in_message_types": options.opt_in_message_types,
                "additive_subscriptions_enabled": options.additive_subscriptions_enabled,
            }
