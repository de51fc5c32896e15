"""Tasks over the app database: claim inbox items with a lease and write each item's outcome back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from config.masking import mask_emails
from config.settings import get_settings
from inbox.store import Inbox, Item

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


@task(name="claim-inbox-items", **INBOX_TASK_OPTIONS)
def claim_items(source: str, limit: int, owner: str) -> list[Item]:
    """Lease up to ``limit`` due items of ``source`` to ``owner`` (several drains may run at once)."""
    return app_inbox().claim(
        source, limit=limit, lease_seconds=get_settings().inbox_lease_seconds, owner=owner
    )


@dataclass(frozen=True)
class Outcome:
    """What to record for one claimed item."""

    item_id: int
    status: Literal["delivered", "retry", "dead", "skipped"]
    reason: str = ""
    delay: float | None = None


@task(name="record-outcomes", **INBOX_TASK_OPTIONS)
def record_outcomes(source: str, outcomes: Sequence[Outcome], owner: str) -> dict[str, int]:
    """Write outcomes back (only for items this drain still holds); emits an event per dead item."""
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
