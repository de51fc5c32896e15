"""Subscription writes: overwrite (updateSubscriptions) and additive (/subscriptions), creating unknown users.

Every endpoint here creates a user it does not know, by email. Iterable documents that for PATCH and
for the bulk ``?action=subscribe``; for the unsubscribe forms we assume the same, the pessimistic
reading, so a caller that must never create people is caught by the ``users_created`` counter.
"""

from __future__ import annotations

from typing import Any

from dev.standins.iterable.answers import Answer, bad_params, envelope, fail, ok
from dev.standins.iterable.fields import valid_email, valid_user_id
from dev.standins.iterable.store import SUBSCRIPTION_ARRAYS, IterableSandbox, User

GROUPS = {"emaillist": "emailList", "messagetype": "messageType", "messagechannel": "messageChannel"}


class _Refused(ValueError):
    """A request Iterable refuses; ``kind`` picks the failure list or the error code."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _target(sb: IterableSandbox, email: Any, user_id: Any) -> tuple[User | None, str]:
    """The user to write (None: create one with the returned email); refuses bad identifiers."""
    if email is not None:
        if not valid_email(email):
            raise _Refused("invalidEmail", "Invalid email address")
        return sb.find(email=email), str(email).lower()
    if user_id is None:
        raise _Refused("bad", "Either email or userId must be provided")
    if not valid_user_id(user_id):
        raise _Refused("invalidUserId", "Invalid userId")
    user = sb.find(user_id=user_id)
    if user is None:
        # An email-based project cannot create a user from a userId alone.
        raise _Refused("unknownUserId", "No user exists with this userId")
    return user, user.email


def _misaligned(sb: IterableSandbox, subs: dict[str, list[int]]) -> list[int]:
    """Subscribed message types whose channel the user left."""
    left = set(subs["unsubscribedChannelIds"])
    return [
        type_id
        for type_id in subs["subscribedMessageTypeIds"]
        if sb.message_types.get(type_id, {}).get("channelId") in left
    ]


def _save(
    sb: IterableSandbox, user: User | None, email: str, subs: dict[str, list[int]], endpoint: str
) -> None:
    if user is None:
        user = sb.create_user(email, endpoint)
    user.subs = subs
    sb.touch_subscriptions(user)


def _overwrite(sb: IterableSandbox, item: Any, endpoint: str) -> None:
    """Apply one UpdateSubscriptionsRequest: every non-null array sent replaces the stored one."""
    if not isinstance(item, dict):
        raise _Refused("bad", "Each request must be an object")
    sent: dict[str, list[int]] = {}
    for name in SUBSCRIPTION_ARRAYS:
        value = item.get(name)
        if value is None:
            continue
        if not isinstance(value, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in value
        ):
            raise _Refused("bad", f"{name} must be an array of integers")
        sent[name] = list(dict.fromkeys(value))
    unknown = [x for x in sent.get("unsubscribedChannelIds", []) if x not in sb.channels]
    for name in ("unsubscribedMessageTypeIds", "subscribedMessageTypeIds"):
        unknown += [x for x in sent.get(name, []) if x not in sb.message_types]
    if unknown:
        raise _Refused("bad", f"Unknown channel or message type ids: {unknown}")
    user, email = _target(sb, item.get("email"), item.get("userId"))
    current = user.subs if user is not None else {name: [] for name in SUBSCRIPTION_ARRAYS}
    subs = {name: sent.get(name, list(current[name])) for name in SUBSCRIPTION_ARRAYS}
    if item.get("validateChannelAlignment", True) is not False and _misaligned(sb, subs):
        raise _Refused(
            "alignment",
            f"Message types {_misaligned(sb, subs)} are subscribed but their channel is unsubscribed",
        )
    _save(sb, user, email, subs, endpoint)


def _single_error(exc: _Refused) -> Answer:
    codes = {
        "invalidEmail": "InvalidEmailAddressError",
        "invalidUserId": "InvalidUserIdError",
        "unknownUserId": "UnknownUserIdError",
    }
    return fail(400, codes.get(exc.kind, "BadParams"), str(exc))


def update_subscriptions(sb: IterableSandbox, body: Any) -> Answer:
    """POST users/updateSubscriptions: overwrite the arrays sent; a misaligned result is a 400."""
    with sb.lock:
        sb.settle()
        try:
            _overwrite(sb, body, "users/updateSubscriptions")
        except _Refused as exc:
            return _single_error(exc)
    return ok("User subscriptions updated")


def bulk_update_subscriptions(sb: IterableSandbox, body: Any) -> Answer:
    """POST users/bulkUpdateSubscriptions: per-item failures in the four lists the spec requires."""
    items = body.get("updateSubscriptionsRequests") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return bad_params("updateSubscriptionsRequests must be an array")
    result: dict[str, Any] = {
        "successCount": 0,
        "failCount": 0,
        "invalidEmails": [],
        "invalidUserIds": [],
        "validEmailFailures": [],
        "validUserIdFailures": [],
    }
    with sb.lock:
        sb.settle()
        for item in items:
            try:
                _overwrite(sb, item, "users/bulkUpdateSubscriptions")
                result["successCount"] += 1
            except _Refused as exc:
                if exc.kind == "bad":
                    return bad_params(str(exc))
                by_email = item.get("email") is not None
                if exc.kind in ("invalidEmail", "invalidUserId", "unknownUserId"):
                    result["invalidEmails" if by_email else "invalidUserIds"].append(
                        str(item.get("email") if by_email else item.get("userId"))
                    )
                else:
                    # A valid identifier refused for its content (channel alignment).
                    result["validEmailFailures" if by_email else "validUserIdFailures"].append(
                        str(item.get("email") if by_email else item.get("userId"))
                    )
                result["failCount"] += 1
    return 200, result


def _additive(sb: IterableSandbox, subs: dict[str, list[int]], group: str, group_id: int, on: bool) -> None:
    """Change one membership in ``subs`` in place; subscribing under a left channel is refused."""

    def put(name: str, present: bool) -> None:
        ids = subs[name]
        if present and group_id not in ids:
            ids.append(group_id)
        elif not present and group_id in ids:
            ids.remove(group_id)

    if group == "emailList":
        put("emailListIds", on)
    elif group == "messageChannel":
        # Unsubscribing a channel leaves its opt-in types dormant, as validateChannelAlignment=false does.
        put("unsubscribedChannelIds", not on)
    else:
        kind = sb.message_types[group_id]
        if on and kind["channelId"] in subs["unsubscribedChannelIds"]:
            raise _Refused("alignment", f"Channel {kind['channelId']} is unsubscribed")
        if kind["subscriptionPolicy"] == "OptIn":
            put("subscribedMessageTypeIds", on)
            if on:
                put("unsubscribedMessageTypeIds", False)
        else:
            put("unsubscribedMessageTypeIds", not on)


def _group(sb: IterableSandbox, group: str, group_id: int) -> str:
    name = GROUPS.get(group.lower())
    if name is None:
        raise _Refused("bad", f"Unknown subscription group {group!r}")
    if group_id < 0:
        raise _Refused("bad", "Subscription group id must be numeric")
    if name == "messageType" and group_id not in sb.message_types:
        raise _Refused("bad", f"Message type {group_id} does not exist")
    if name == "messageChannel" and group_id not in sb.channels:
        raise _Refused("bad", f"Channel {group_id} does not exist")
    return name


def _apply_additive(
    sb: IterableSandbox, group: str, group_id: int, email: Any, user_id: Any, on: bool, endpoint: str
) -> None:
    user, address = _target(sb, email, user_id)
    base = user.subs if user is not None else {}
    subs = {name: list(base.get(name, [])) for name in SUBSCRIPTION_ARRAYS}
    _additive(sb, subs, group, group_id, on)
    _save(sb, user, address, subs, endpoint)


def _not_enabled(sb: IterableSandbox) -> Answer | None:
    """404 while the project lacks Iterable's enablement of the additive endpoints (the spec's 404)."""
    if sb.options.additive_subscriptions_enabled:
        return None
    return fail(404, "NotFound", "Endpoint not found")


def subscribe_one(
    sb: IterableSandbox,
    group: str,
    group_id: int,
    email: str | None,
    user_id: str | None,
    on: bool,
    endpoint: str,
) -> Answer:
    """PATCH (``on``) or DELETE one user's membership of a list, message type or channel."""
    with sb.lock:
        closed = _not_enabled(sb)
        if closed is not None:
            return closed
        sb.settle()
        try:
            name = _group(sb, group, group_id)
            _apply_additive(sb, name, group_id, email, user_id, on, endpoint)
        except _Refused as exc:
            return _single_error(exc)
    return ok(f"{'Subscribed' if on else 'Unsubscribed'} user {'to' if on else 'from'} {name} {group_id}")


def subscribe_bulk(
    sb: IterableSandbox, group: str, group_id: int, action: str, body: Any, endpoint: str
) -> Answer:
    """PUT /subscriptions/{group}/{id}?action=: many users at once, answered 202 as Iterable does."""
    with sb.lock:
        closed = _not_enabled(sb)
    if closed is not None:
        return closed
    if action not in ("subscribe", "unsubscribe"):
        return bad_params("action must be subscribe or unsubscribe")
    if not isinstance(body, dict):
        return bad_params("Request body must be an object")
    emails, user_ids = body.get("users") or [], body.get("usersByUserId") or []
    if not isinstance(emails, list) or not isinstance(user_ids, list):
        return bad_params("users and usersByUserId must be arrays")
    params: dict[str, Any] = {"successCount": 0, "failCount": 0, "invalidEmails": [], "invalidUserIds": []}
    params["refusedEmails"], params["refusedUserIds"] = [], []
    with sb.lock:
        sb.settle()
        try:
            name = _group(sb, group, group_id)
        except _Refused as exc:
            return _single_error(exc)
        targets = [(email, None) for email in emails] + [(None, user_id) for user_id in user_ids]
        for email, user_id in targets:
            try:
                _apply_additive(sb, name, group_id, email, user_id, action == "subscribe", endpoint)
                params["successCount"] += 1
            except _Refused as exc:
                by_email = email is not None
                refused = exc.kind == "alignment"
                key = ("refused" if refused else "invalid") + ("Emails" if by_email else "UserIds")
                params[key].append(str(email if by_email else user_id))
                params["failCount"] += 1
    return 202, envelope(f"Bulk {action} accepted", "Success", params)
