"""users/update and users/bulkUpdate: upsert by the project type's identifiers, types checked per batch."""

from __future__ import annotations

import uuid
from typing import Any

from dev.standins.iterable.answers import Answer, bad_params, fail, failure_lists, ok
from dev.standins.iterable.fields import (
    MANAGED_FIELDS,
    bulk_update_writable,
    check_types,
    mismatch_message,
    subscription_ids,
    valid_email,
    valid_user_id,
)
from dev.standins.iterable.store import IterableSandbox, ProfileWrite

FAILED_USER_UPDATES = (
    "conflictEmails",
    "conflictUserIds",
    "forgottenEmails",
    "forgottenUserIds",
    "invalidDataEmails",
    "invalidDataUserIds",
    "invalidEmails",
    "invalidUserIds",
    "notFoundEmails",
    "notFoundUserIds",
)


class _Batch:
    """What one request's items add up to before anything is applied."""

    def __init__(self, create_new: bool) -> None:
        self.create_new = create_new
        self.new_types: dict[str, str] = {}
        self.type_errors: dict[str, dict[str, Any]] = {}
        self.filtered: set[str] = set()
        self.writes: list[ProfileWrite] = []


class _BadItem(ValueError):
    """An item whose structure makes the whole request a 400 BadParams."""


def _identify(sb: IterableSandbox, item: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """Resolve ``(email, userId, failure list name)`` under the project type's rules (options)."""
    email, user_id = item.get("email"), item.get("userId")
    if user_id is not None and not valid_user_id(user_id):
        return None, None, "invalidUserIds"
    if sb.options.project_type != "email":
        return _identify_by_user_id(sb, email, user_id)
    if email is not None:
        if not valid_email(email):
            return None, None, "invalidEmails"
        owner = sb.email_by_user_id.get(user_id) if user_id is not None else None
        if owner is not None and owner != email.lower():
            return None, None, "conflictEmails"
        return email.lower(), user_id, None
    known = sb.find(user_id=user_id)
    if known is not None:
        return known.email, user_id, None
    if item.get("preferUserId") is True:
        # Iterable gives such users a placeholder address.
        return f"{uuid.uuid4().hex}@placeholder.email", user_id, None
    return None, None, "notFoundUserIds"


def _identify_by_user_id(
    sb: IterableSandbox, email: str | None, user_id: str | None
) -> tuple[str | None, str | None, str | None]:
    """userID-based and hybrid projects: an unknown userId is created whatever preferUserId says (the
    spec: preferUserId is "only respected in API calls for email-based projects"). A hybrid project
    also knows and creates people by address; a userID-based one cannot match an address alone (how
    Iterable answers that is not in the spec: here it fails as notFoundEmails)."""
    if email is not None and not valid_email(email):
        return None, None, "invalidEmails"
    if user_id is not None:
        known = sb.find(user_id=user_id)
        if known is not None:
            return known.email, user_id, None
        by_email = sb.find(email=email) if email is not None else None
        if by_email is not None and by_email.user_id not in (None, user_id):
            return None, None, "conflictUserIds"
        # Users are keyed by address here; one without an address gets a placeholder, as Iterable's do.
        return (email or f"{uuid.uuid4().hex}@placeholder.email").lower(), user_id, None
    assert email is not None
    if sb.options.project_type == "hybrid":
        return email.lower(), None, None
    known = sb.find(email=email)
    return (known.email, known.user_id, None) if known is not None else (None, None, "notFoundEmails")


def _stage(
    sb: IterableSandbox, batch: _Batch, endpoint: str, item: dict[str, Any], email: str, user_id: str | None
) -> None:
    """Check one item's fields and queue its write; nothing is applied until the batch passes."""
    fields = item.get("dataFields") or {}
    if not isinstance(fields, dict):
        raise _BadItem("dataFields must be an object")
    kept: dict[str, Any] = {}
    subs: dict[str, list[int]] = {}
    known = sb.user_field_types
    writable = bulk_update_writable(sb.options.opt_in_message_types) if endpoint == "users/bulkUpdate" else ()
    for key, value in fields.items():
        if key in writable:
            ids = subscription_ids(value)
            if ids is None:
                raise _BadItem(f"{key} must be an array of integer ids")
            subs[key] = ids
        elif key in MANAGED_FIELDS or (
            not batch.create_new and key not in known and key not in batch.new_types
        ):
            batch.filtered.add(key)
        else:
            kept[key] = value
    check_types(kept, known, batch.new_types, batch.type_errors, "user")
    merge = item.get("mergeNestedObjects") is True
    batch.writes.append(ProfileWrite(endpoint, email, user_id, kept, merge, subs))


def _mismatch(batch: _Batch) -> Answer:
    params = {"validationErrors": batch.type_errors}
    return fail(400, "RequestFieldsTypesMismatched", mismatch_message(batch.type_errors), params)


def _commit(sb: IterableSandbox, batch: _Batch) -> None:
    sb.user_field_types.update(batch.new_types)
    for write in batch.writes:
        sb.write_profile(write)


def update_user(sb: IterableSandbox, body: Any) -> Answer:
    """POST users/update: one upsert; identity problems and type clashes are 4xx answers."""
    if not isinstance(body, dict):
        return bad_params("Request body must be an object")
    if body.get("email") is None and body.get("userId") is None:
        return bad_params("Either email or userId must be provided")
    create_new = body.get("createNewFields", sb.options.create_new_fields_default) is not False
    with sb.lock:
        sb.settle()
        email, user_id, failure = _identify(sb, body)
        if failure == "invalidEmails":
            return fail(400, "InvalidEmailAddressError", "Invalid email address")
        if failure == "invalidUserIds":
            return fail(400, "InvalidUserIdError", "Invalid userId")
        if failure == "conflictEmails":
            return fail(409, "UserIdAlreadyExists", "userId already belongs to another user")
        if failure == "notFoundUserIds" or email is None:
            return fail(
                400, "UnknownUserIdError", "No user exists with this userId; set preferUserId to create"
            )
        batch = _Batch(create_new)
        try:
            _stage(sb, batch, "users/update", body, email, user_id)
        except _BadItem as exc:
            return bad_params(str(exc))
        if batch.type_errors:
            return _mismatch(batch)
        _commit(sb, batch)
    return ok("This user has been updated")


def bulk_update(sb: IterableSandbox, body: Any) -> Answer:
    """POST users/bulkUpdate: per-item identity failures, but one type clash fails the whole batch."""
    users = body.get("users") if isinstance(body, dict) else None
    if not isinstance(users, list):
        return bad_params("users must be an array")
    create_new = body.get("createNewFields", sb.options.create_new_fields_default) is not False
    failed = failure_lists(*FAILED_USER_UPDATES)
    batch = _Batch(create_new)
    with sb.lock:
        sb.settle()
        for item in users:
            if not isinstance(item, dict) or (item.get("email") is None and item.get("userId") is None):
                return bad_params("Each user needs an email or a userId")
            email, user_id, failure = _identify(sb, item)
            if failure is not None or email is None:
                name = failure or "invalidEmails"
                failed[name].append(str(item.get("userId" if name.endswith("UserIds") else "email")))
                continue
            try:
                _stage(sb, batch, "users/bulkUpdate", item, email, user_id)
            except _BadItem as exc:
                return bad_params(str(exc))
        if batch.type_errors:
            return _mismatch(batch)
        _commit(sb, batch)
    fail_count = sum(len(values) for values in failed.values())
    return 200, {
        "successCount": len(batch.writes),
        "failCount": fail_count,
        "failedUpdates": failed,
        "filteredOutFields": sorted(batch.filtered),
        "createdFields": sorted(batch.new_types),
        "invalidEmails": failed["invalidEmails"],
        "invalidUserIds": failed["invalidUserIds"],
    }
