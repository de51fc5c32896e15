"""Names each request by its endpoint (``users/bulkUpdate``...): the key of limits, faults and counters."""

from __future__ import annotations

SUBSCRIBE = "subscriptions/subscribe"
UNSUBSCRIBE = "subscriptions/unsubscribe"
BULK_SUBSCRIBE = "subscriptions/bulkSubscribe"
BULK_UNSUBSCRIBE = "subscriptions/bulkUnsubscribe"
OTHER = "other"

_FIXED = {
    ("POST", "events/track"): "events/track",
    ("POST", "events/trackBulk"): "events/trackBulk",
    ("POST", "users/update"): "users/update",
    ("POST", "users/bulkUpdate"): "users/bulkUpdate",
    ("POST", "users/updateSubscriptions"): "users/updateSubscriptions",
    ("POST", "users/bulkUpdateSubscriptions"): "users/bulkUpdateSubscriptions",
    ("GET", "users/getByEmail"): "users/getByEmail",
    ("GET", "users/byUserId"): "users/byUserId",
    ("GET", "users/getFields"): "users/getFields",
    ("GET", "channels"): "channels",
    ("GET", "messageTypes"): "messageTypes",
    ("GET", "export/data.json"): "export/data.json",
    ("GET", "lists"): "lists",
    ("POST", "lists"): "lists/create",
    ("POST", "lists/subscribe"): "lists/subscribe",
    ("POST", "lists/unsubscribe"): "lists/unsubscribe",
    ("GET", "lists/getUsers"): "lists/getUsers",
}


def resolve(method: str, path: str, query: str) -> str:
    """The endpoint name of an ``/api/...`` request; the path forms share their query form's name."""
    rest = path[len("/api/") :].rstrip("/")
    fixed = _FIXED.get((method, rest))
    if fixed is not None:
        return fixed
    parts = rest.split("/")
    if method == "GET" and parts[0] == "users" and len(parts) == 3 and parts[1] == "byUserId":
        return "users/byUserId"
    if method == "GET" and parts[0] == "users" and len(parts) == 2 and "@" in parts[1]:
        return "users/getByEmail"
    if method == "GET" and parts[0] == "lists" and len(parts) == 3 and parts[2] == "size":
        return "lists/size"
    if parts[0] == "subscriptions":
        if len(parts) == 5 and method == "PATCH":
            return SUBSCRIBE
        if len(parts) == 5 and method == "DELETE":
            return UNSUBSCRIBE
        if len(parts) == 3 and method == "PUT":
            return BULK_UNSUBSCRIBE if "action=unsubscribe" in query else BULK_SUBSCRIBE
    return OTHER
