"""The shapes Iterable answers in: the ``{msg, code, params}`` envelope and the bulk failure lists."""

from __future__ import annotations

from typing import Any

# An endpoint's result: HTTP status and JSON body.
Answer = tuple[int, dict[str, Any]]

RATE_LIMIT_TEXT = "Rate limit exceeded. Please try again later."

# Codes used when a fault or the gate answers a status without a handler behind it.
STATUS_CODES = {
    400: "BadParams",
    401: "BadApiKey",
    403: "Forbidden",
    404: "NotFound",
    409: "GenericError",
    413: "BatchTooLarge",
    429: "RateLimitExceeded",
}

# Gateways answer these in plain text, not Iterable's JSON.
PLAIN_TEXT = {
    408: "Request Timeout",
    429: RATE_LIMIT_TEXT,
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def envelope(msg: str, code: str = "Success", params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Iterable's IterableApiResponse; ``params`` left out when empty (the spec types it as an object)."""
    body: dict[str, Any] = {"msg": msg, "code": code}
    if params is not None:
        body["params"] = params
    return body


def ok(msg: str, params: dict[str, Any] | None = None) -> Answer:
    """A 200 Success envelope."""
    return 200, envelope(msg, "Success", params)


def fail(status: int, code: str, msg: str, params: dict[str, Any] | None = None) -> Answer:
    """An error envelope with its status."""
    return status, envelope(msg, code, params)


def bad_params(msg: str) -> Answer:
    """400 BadParams: the request's structure is wrong."""
    return fail(400, "BadParams", msg)


def failure_lists(*names: str) -> dict[str, list[str]]:
    """Empty failure lists under the given names, filled item by item."""
    return {name: [] for name in names}
