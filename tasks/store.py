"""Tasks over the app database: claim inbox items with a lease and write each item's outcome back.

``claim`` and ``record`` are the same work as plain calls, for a drain's hot loop where a task run per
batch costs more than the database work itself (the drain reports both in its counts artifact). They
retry a failed database call the way the tasks do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from iterable_recipes.masking import mask_emails
from iterable_recipes.settings import get_settings
from iterable_recipes.store.inbox import Inbox, Item

log = logging.getLogger(__name__)
R = TypeVar("R")

INBOX_TASK_OPTIONS: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "persist_result": False,
    "retries": 2,
    "retry_delay_seconds": 2,
}


@lru_cache(maxsize=1)
def app_inbox() -> Inbox:
    """The process's inbox on RECIPES_DATABASE_URL (one connection pool per process)."""
    settings = get_settings()
    return Inbox(settings.recipes_database_url, max_attempts=settings.inbox_max_attempts)


def _retried(call: Callable[[], R]) -> R:
    """``call()``, tried again like the inbox tasks (2 retries, 2 s apart) when the database fails."""
    retries, delay = INBOX_TASK_OPTIONS["retries"], INBOX_TASK_OPTIONS["retry_delay_seconds"]
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == retries:
                raise
            # Class name only: driver messages can carry the database URL.
            log.warning("inbox call failed (%s); trying again in %s s", type(exc).__name__, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def claim(source: str, limit: int, owner: str) -> list[Item]:
    """Lease up to ``limit`` due items of ``source`` to ``owner`` (several drains may run at once)."""
    lease = get_settings().inbox_lease_seconds
    return _retried(lambda: app_inbox().claim(source, limit=limit, lease_seconds=lease, owner=owner))


@task(name="claim-inbox-items", **INBOX_TASK_OPTIONS)
def claim_items(source: str, limit: int, owner: str) -> list[Item]:
    """Lease up to ``limit`` due items of ``source`` to ``owner`` (several drains may run at once)."""
    return claim(source, limit, owner)


@dataclass(frozen=True)
class Outcome:
    """What to record for one claimed item."""

    item_id: int
    status: Literal["delivered", "retry", "dead", "skipped"]
    reason: str = ""
    delay: float | None = None


def record(source: str, outcomes: Sequence[Outcome], owner: str) -> dict[str, int]:
    """Write outcomes back (only for items this drain still holds); emits an event per dead item.
    The writes are conditional on the item's state, so trying the list again after a failure is safe."""
    return _retried(lambda: _record(source, outcomes, owner))


@task(name="record-outcomes", **INBOX_TASK_OPTIONS)
def record_outcomes(source: str, outcomes: Sequence[Outcome], owner: str) -> dict[str, int]:
    """Write outcomes back (only for items this drain still holds); emits an event per dead item."""
    return _record(source, outcomes, owner)


def _record(source: str, outcomes: Sequence[Outcome], owner: str) -> dict[str, int]:
    inbox = app_inbox()
    counts = {"delivered": 0, "retry": 0, "dead": 0, "skipped": 0}
    delivered = [o.item_id for o in outcomes if o.status == "delivered"]
    if delivered:
        counts["delivered"] = inbox.mark_delivered(delivered, owner=owner)
    for outcome in outcomes:
        reason = mask_emails(outcome.reason)
        if outcome.status == "retry":
            status = inbox.mark_retry(outcome.item_id, reason, delay=outcome.delay, owner=owner)
            if status is not None:
                counts[status] += 1
                if status == "dead":
                    _emit_dead(source, outcome.item_id, reason)
        elif outcome.status == "dead":
            if inbox.mark_dead(outcome.item_id, reason):
                counts["dead"] += 1
                _emit_dead(source, outcome.item_id, reason)
        elif outcome.status == "skipped" and inbox.mark_skipped(outcome.item_id, reason):
            counts["skipped"] += 1
    return counts


def _emit_dead(source: str, item_id: int, reason: str) -> None:
    """Tell automations an inbox item gave up (reason already masked)."""
    emit_event(
        event="recipes.inbox.item.dead",
        resource={"prefect.resource.id": f"recipes.inbox.{source}.{item_id}", "recipes.source": source},
        payload={"item_id": item_id, "reason": reason},
    )
