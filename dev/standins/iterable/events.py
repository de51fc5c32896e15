"""events/track and events/trackBulk: one event per id (a re-send updates it), known users only."""

from __future__ import annotations

import time
import uuid
from typing import Any

from dev.standins.iterable.answers import Answer, bad_params, fail, failure_lists, ok
from dev.standins.iterable.fields import (
    check_types,
    mismatch_message,
    valid_email,
    valid_event_id,
    valid_user_id,
)
from dev.standins.iterable.store import IterableSandbox, User

FAILED_EVENT_UPDATES = (
    "forgottenEmails",
    "forgottenUserIds",
    "invalidEmails",
    "invalidUserIds",
    "notFoundEmails",
    "notFoundUserIds",
)


class _BadEvent(ValueError):
    """An event whose structure makes the whole request a 400 BadParams."""


def _check_structure(item: Any) -> None:
    if not isinstance(item, dict):
        raise _BadEvent("Each event must be an object")
    if not isinstance(item.get("eventName"), str) or not item["eventName"]:
        raise _BadEvent("eventName is required")
    if item.get("email") is None and item.get("userId") is None:
        raise _BadEvent("Either email or userId must be provided")
    if item.get("id") is not None and not valid_event_id(item["id"]):
        raise _BadEvent("Event id must be letters, digits and hyphens, at most 512 bytes")
    if item.get("dataFields") is not None and not isinstance(item["dataFields"], dict):
        raise _BadEvent("dataFields must be an object")


def _find_user(sb: IterableSandbox, item: dict[str, Any]) -> tuple[User | None, str | None]:
    """The event's user, or the failure list that names why there is none."""
    email = item.get("email")
    if email is not None:
        if not valid_email(email):
            return None, "invalidEmails"
        user = sb.find(email=email)
        return user, None if user is not None else "notFoundEmails"
    if not valid_user_id(item.get("userId")):
        return None, "invalidUserIds"
    user = sb.find(user_id=item["userId"])
    return user, None if user is not None else "notFoundUserIds"


def _store(sb: IterableSandbox, item: dict[str, Any], user: User, endpoint: str) -> str:
    event_id = item.get("id") or uuid.uuid4().hex
    event = {
        "id": event_id,
        "eventName": item["eventName"],
        "email": user.email,
        "userId": user.user_id,
        "createdAt": item.get("createdAt", int(time.time())),
        "dataFields": dict(item.get("dataFields") or {}),
        "endpoint": endpoint,
    }
    for key in ("campaignId", "templateId"):
        if item.get(key) is not None:
            event[key] = item[key]
    # Iterable upserts on id: the stored event is replaced, never duplicated.
    sb.events_by_id[event_id] = event
    sb.event_writes[event_id] += 1
    sb.note_write(user.email, "event", "id", event_id)
    return event_id


def _stage_types(
    sb: IterableSandbox, item: dict[str, Any], pending: dict[str, dict[str, str]], errors: dict[str, Any]
) -> None:
    name = item["eventName"]
    check_types(
        item.get("dataFields") or {},
        sb.event_field_types[name],
        pending.setdefault(name, {}),
        errors,
        "event",
    )


def _commit_types(sb: IterableSandbox, pending: dict[str, dict[str, str]]) -> list[str]:
    created: list[str] = []
    for name, types in pending.items():
        sb.event_field_types[name].update(types)
        created.extend(types)
    return sorted(set(created))


def track(sb: IterableSandbox, body: Any) -> Answer:
    """POST events/track: one event for a known user, answered with its id."""
    try:
        _check_structure(body)
    except _BadEvent as exc:
        return bad_params(str(exc))
    with sb.lock:
        sb.settle()
        user, failure = _find_user(sb, body)
        if user is None:
            if failure == "invalidEmails":
                return fail(400, "InvalidEmailAddressError", "Invalid email address")
            if failure == "invalidUserIds":
                return fail(400, "InvalidUserIdError", "Invalid userId")
            code = "UnknownEmailError" if failure == "notFoundEmails" else "UnknownUserIdError"
            return fail(400, code, "User does not exist")
        pending: dict[str, dict[str, str]] = {}
        errors: dict[str, Any] = {}
        _stage_types(sb, body, pending, errors)
        if errors:
            return fail(
                400, "RequestFieldsTypesMismatched", mismatch_message(errors), {"validationErrors": errors}
            )
        _commit_types(sb, pending)
        event_id = _store(sb, body, user, "events/track")
    return ok(f"Event with id: {event_id} tracked.", {"id": event_id})


def track_bulk(sb: IterableSandbox, body: Any) -> Answer:
    """POST events/trackBulk: unknown users are reported, not created; a type clash fails the batch."""
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list):
        return bad_params("events must be an array")
    failed = failure_lists(*FAILED_EVENT_UPDATES)
    staged: list[tuple[dict[str, Any], User]] = []
    pending: dict[str, dict[str, str]] = {}
    errors: dict[str, Any] = {}
    with sb.lock:
        sb.settle()
        for item in events:
            try:
                _check_structure(item)
            except _BadEvent as exc:
                return bad_params(str(exc))
            user, failure = _find_user(sb, item)
            if user is None:
                name = failure or "notFoundEmails"
                failed[name].append(str(item.get("userId" if name.endswith("UserIds") else "email")))
                continue
            _stage_types(sb, item, pending, errors)
            staged.append((item, user))
        if errors:
            return fail(
                400, "RequestFieldsTypesMismatched", mismatch_message(errors), {"validationErrors": errors}
            )
        created = _commit_types(sb, pending)
        for item, user in staged:
            _store(sb, item, user, "events/trackBulk")
    return 200, {
        "successCount": len(staged),
        "failCount": sum(len(values) for values in failed.values()),
        "failedUpdates": failed,
        "disallowedEventNames": [],
        "filteredOutFields": [],
        "createdFields": created,
        "invalidEmails": failed["invalidEmails"],
        "invalidUserIds": failed["invalidUserIds"],
    }
