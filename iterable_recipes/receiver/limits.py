"""The lengths the receiver accepts in headers, derived from the app database's columns and published in
its OpenAPI document, so the schema, the server and the document agree (an over-long value is a 400
naming the limit, never a database error answered 503 on every retry)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from sqlalchemy import String

from iterable_recipes.receiver.errors import Rejected
from iterable_recipes.store.schema import received_events

# Signature and timestamp headers, and the Marketo secret header: far above any real value (a few
# signatures while rotating), far below what a proxy or uvicorn would refuse without a reason.
HEADER_MAX_CHARS = 1024


def webhook_id_max_chars(prefix: str) -> int:
    """The longest webhook-id stored under ``prefix`` (``"customersdot:"``) in the webhook_id column."""
    return column_length("webhook_id") - len(prefix)


def column_length(name: str) -> int:
    """The declared length of the String column ``name`` of received_events."""
    length = cast(String, received_events.c[name].type).length
    if length is None:
        raise TypeError(f"received_events.{name} has no declared length")
    return int(length)


def check_lengths(headers: Mapping[str, str], limits: Mapping[str, int]) -> None:
    """Refuse (400) the first header of ``limits`` present in ``headers`` and longer than its limit."""
    for name, limit in limits.items():
        value = headers.get(name.lower())
        if value is not None and len(value) > limit:
            raise Rejected(400, f"{name} is longer than {limit} characters")
