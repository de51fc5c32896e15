"""Tasks over the app database: claim inbox items with a lease, write each item's outcome, audit opt-outs.

A failed database call is tried again by the task (twice, two seconds apart); every write is
conditional on the item's state, so trying again after a failure is safe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from iterable_recipes.optouts.decisions import OptOutDecision
from iterable_recipes.resources import Resources
from iterable_recipes.store import Item, Outcome
from tasks import unwalked

STORE_TASK_OPTIONS: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "persist_result": False,
    "retries": 2,
    "retry_delay_seconds": 2,
}


@task(name="claim-inbox-items", **STORE_TASK_OPTIONS)
def claim_items(resources: Resources, source: str, limit: int, owner: str) -> list[Item]:
    """Lease up to ``limit`` due items of ``source`` to ``owner`` (several drains may run at once)."""
    lease = resources.settings.inbox_lease_seconds
    return resources.inbox.claim(source, limit=limit, lease_seconds=lease, owner=owner)


@task(name="record-outcomes", **STORE_TASK_OPTIONS)
def record_outcomes(
    resources: Resources, source: str, outcomes: Sequence[Outcome], owner: str
) -> dict[str, int]:
    """Write outcomes back (only for items this drain still holds); emits an event per dead item."""
    settled = resources.inbox.settle(outcomes, owner)
    for item_id, reason in settled.dead:
        emit_event(
            event="recipes.inbox.item.dead",
            resource={"prefect.resource.id": f"recipes.inbox.{source}.{item_id}", "recipes.source": source},
            payload={"item_id": item_id, "reason": reason},
        )
    return settled.counts


def outcome_recorder(
    resources: Resources, source: str, owner: str
) -> Callable[[list[Outcome]], dict[str, int]]:
    """``record_outcomes`` for one drain, called with its outcomes unwalked."""
    return lambda outcomes: record_outcomes(resources, source, unwalked(outcomes), owner)


@task(name="record-opt-out-audit", **STORE_TASK_OPTIONS)
def record_audit(resources: Resources, items: Sequence[Item], decisions: Sequence[OptOutDecision]) -> int:
    """One audit record per decision: trigger, Marketo lead and activity ids, when, Iterable's answer."""
    for item, decision in zip(items, decisions, strict=True):
        payload = item.payload or {}
        resources.inbox.add_audit(
            "webhook" if payload.get("trigger") == "webhook" else "poll",
            payload.get("leadId", ""),
            payload.get("activityIds", []),
            decision.outcome,
            {"detail": decision.detail, "retryable": decision.retryable},
        )
    return len(items)
