"""Static lists: create, list, subscribe and unsubscribe members, read members and size.

In an email-based project (the default) lists/subscribe creates a user for an unknown address whatever
``updateExistingUsersOnly`` says (the spec: that flag is "Only respected in API calls for userID-based
and hybrid projects"), and cannot create one from a userId alone (``notFoundUserIds``); in userID-based
and hybrid projects it creates unknown people, by address or userId, unless that flag is true.
lists/unsubscribe creates nobody: an unknown address or userId is reported in ``notFoundEmails`` /
``notFoundUserIds`` (the spec: those lists are "for subscribe/unsubscribe only"). Membership changes
are applied like profile writes, ``profile_delay_seconds`` after they were accepted; ``getUsers`` and
``size`` show only applied ones. Adding to a list changes ``emailListIds`` alone, never a channel or
message type; ``channelUnsubscribe: true`` also leaves the marketing email channel.
"""

from __future__ import annotations

import uuid
from typing import Any

from dev.standins.iterable.answers import Answer, bad_params, failure_lists
from dev.standins.iterable.fields import valid_email, valid_user_id
from dev.standins.iterable.profiles import FAILED_USER_UPDATES
from dev.standins.iterable.store import IterableSandbox, User

SUBSCRIBE = "lists/subscribe"
UNSUBSCRIBE = "lists/unsubscribe"
# The channel a list's "associated channel" is: every seeded list belongs to marketing email.
LIST_CHANNEL_ID = 1


def create(sb: IterableSandbox, body: Any) -> Answer:
    """POST /api/lists: a new static list; answers its id."""
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"].strip():
        return bad_params("name is required")
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        return bad_params("description must be a string")
    return 200, {"listId": sb.create_list(body["name"], description)}


def all_lists(sb: IterableSandbox) -> Answer:
    """GET /api/lists: every list of the project."""
    with sb.lock:
        return 200, {"lists": [dict(item) for item in sb.lists.values()]}


def _static_list(sb: IterableSandbox, list_id: Any) -> int | Answer:
    """The list id when it names a static list, else the 400 Iterable answers."""
    if not isinstance(list_id, int) or isinstance(list_id, bool):
        return bad_params("listId must be an integer")
    found = sb.lists.get(list_id)
    if found is None:
        return bad_params(f"List {list_id} does not exist")
    if found["listType"] != "Standard":
        return bad_params(f"List {list_id} is a {found['listType']} list; only static lists take members")
    return list_id


def _member(sb: IterableSandbox, item: Any) -> tuple[User | None, str | None, str | None]:
    """(applied user or None, address to create under, failure list name) of one subscriber."""
    email, user_id = item.get("email"), item.get("userId")
    if email is not None:
        if not valid_email(email):
            return None, None, "invalidEmails"
        return sb.find(email=email), str(email).lower(), None
    if not valid_user_id(user_id):
        return None, None, "invalidUserIds"
    user = sb.find(user_id=user_id)
    if user is not None:
        return user, user.email, None
    if sb.options.project_type != "email":
        return None, f"{uuid.uuid4().hex}@placeholder.email", None  # created under its userId
    # An email-based project cannot make a user from a userId alone.
    return None, None, "notFoundUserIds"


def change_members(sb: IterableSandbox, body: Any, member: bool) -> Answer:
    """POST lists/subscribe (``member``) or lists/unsubscribe: per-subscriber failures in a 200 body."""
    if not isinstance(body, dict):
        return bad_params("Request body must be an object")
    subscribers = body.get("subscribers")
    if not isinstance(subscribers, list):
        return bad_params("subscribers must be an array")
    endpoint = SUBSCRIBE if member else UNSUBSCRIBE
    skip_unknown = body.get("updateExistingUsersOnly") is True and sb.options.project_type != "email"
    failed = failure_lists(*FAILED_USER_UPDATES)
    success = 0
    with sb.lock:
        sb.settle()
        list_id = _static_list(sb, body.get("listId"))
        if not isinstance(list_id, int):
            return list_id
        for item in subscribers:
            if not isinstance(item, dict) or (item.get("email") is None) == (item.get("userId") is None):
                return bad_params("Each subscriber needs an email or a userId (not both)")
            user, address, failure = _member(sb, item)
            if failure is None and user is None and not member:
                failure = "notFoundEmails"  # removing nobody from a list creates nobody
            elif failure is None and user is None and skip_unknown:
                # Honoured only outside email-based projects: unknown people are left out, not created.
                failure = "notFoundUserIds" if item.get("userId") is not None else "notFoundEmails"
            if failure is not None or address is None:
                name = failure or "invalidEmails"
                failed[name].append(str(item.get("userId" if name.endswith("UserIds") else "email")))
                continue
            new_user_id = item.get("userId") if user is None else None  # a new member under its userId
            sb.write_list(address, new_user_id, list_id, member, endpoint)
            if not member and body.get("channelUnsubscribe") is True and user is not None:
                if LIST_CHANNEL_ID not in user.subs["unsubscribedChannelIds"]:
                    user.subs["unsubscribedChannelIds"].append(LIST_CHANNEL_ID)
                sb.touch_subscriptions(user)
            success += 1
    return 200, {
        "successCount": success,
        "failCount": sum(len(values) for values in failed.values()),
        "failedUpdates": failed,
        "invalidEmails": failed["invalidEmails"],
        "invalidUserIds": failed["invalidUserIds"],
    }


def member_lines(sb: IterableSandbox, list_id: str | None, prefer_user_id: str | None) -> str | Answer:
    """GET lists/getUsers: one member a line (the userId instead of the email with ``preferUserId``)."""
    if list_id is None or not list_id.isdigit():
        return bad_params("listId is required and must be an integer")
    with sb.lock:
        if int(list_id) not in sb.lists:
            return bad_params(f"List {list_id} does not exist")
        sb.settle()
        members = sorted(
            (u for u in sb.users_by_email.values() if int(list_id) in u.subs["emailListIds"]),
            key=lambda u: u.email,
        )
        by_id = prefer_user_id == "true"
        return "".join(f"{u.user_id if by_id and u.user_id else u.email}\n" for u in members)


def size(sb: IterableSandbox, list_id: str) -> str | Answer:
    """GET lists/{listId}/size: the number of applied members, as text."""
    if not list_id.isdigit():
        return bad_params("listId must be an integer")
    with sb.lock:
        if int(list_id) not in sb.lists:
            return bad_params(f"List {list_id} does not exist")
        sb.settle()
        return str(sum(1 for u in sb.users_by_email.values() if int(list_id) in u.subs["emailListIds"]))
