"""Tasks over the app database: claim inbox items with a lease, write each item's outcome, audit opt-outs,
and give back the leases of runs that ended.

A failed database call is tried again by the task (twice, two seconds apart); every write is
conditional on the item's state, so trying again after a failure is safe.

A drain's lease owner is its flow run's id. A run that fails, is cancelled or crashes gives its leases
back on the way out (``release_leases``, the drains' state hooks), and each drain at its start gives
back those of runs Prefect holds as ended (``release_ended_runs``): a run killed with no chance to run
its hooks and marked Crashed by the lost-runs automation, or this run's own earlier attempt (a retried
run keeps its id). Either way the items are due again at once, not when the lease runs out.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import Flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, State
from prefect.events import emit_event
from prefect.logging.loggers import flow_run_logger
from prefect.runtime import flow_run as current_run

from iterable_recipes.identities import normalise_email
from iterable_recipes.not_sent import NotSent, next_step
from iterable_recipes.optouts.decisions import OptOutDecision, item_email
from iterable_recipes.optouts.keys import audit_trigger
from iterable_recipes.optouts.ledger import (
    lifted_items,
    queue_for_written_people,
    requeue_due,
    settle_ledger,
    suppressed_addresses,
)
from iterable_recipes.resources import Resources, run_resources
from iterable_recipes.store import Item, Outcome, Released
from iterable_recipes.store.inbox import LEASE_EXPIRED_EVERY_TIME
from tasks import unwalked
from tasks.runs import start_optout_drain

STORE_TASK_OPTIONS: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "persist_result": False,
    "retries": 2,
    "retry_delay_seconds": 2,
}


def run_owner() -> str:
    """The lease owner of this flow run's claims: the run's id (a new id outside a flow run)."""
    return str(current_run.id) if current_run.id else f"local-{uuid.uuid4().hex[:12]}"


def _announce_dead(source: str, item_id: int, reason: str) -> None:
    emit_event(
        event="recipes.inbox.item.dead",
        resource={"prefect.resource.id": f"recipes.inbox.{source}.{item_id}", "recipes.source": source},
        payload={"item_id": item_id, "reason": reason},
    )


def _released(resources: Resources, owner: str, reason: str) -> Released:
    released = resources.inbox.release(owner, reason)
    for source, item_id in released.dead:
        _announce_dead(source, item_id, f"max attempts reached: {reason}")
    return released


def release_leases(flow: Flow[..., Any], flow_run: FlowRun, state: State) -> None:
    """State hook of the drains (failed, cancelled, crashed): give back every item the run still holds,
    due at once, so `prefect flow-run retry` or the next drain takes them without waiting for the lease."""
    with run_resources() as resources:
        released = _released(resources, str(flow_run.id), f"lease released: the run ended {state.name}")
    flow_run_logger(flow_run, flow).info(
        "Gave back %d inbox item(s) this run held (due again now); %d were on their last attempt (dead)",
        len(released.retry),
        len(released.dead),
    )


# The drains' @flow options: however a run ends without settling its items, it gives their leases back.
RELEASE_LEASES_ON_END: dict[str, Any] = {
    "on_failure": [release_leases],
    "on_cancellation": [release_leases],
    "on_crashed": [release_leases],
}


@task(name="release-ended-runs-leases", **STORE_TASK_OPTIONS)
def release_ended_runs(resources: Resources, source: str, owner: str) -> int:
    """Give back the items of ``source`` leased to flow runs that have ended, and to ``owner`` itself
    (this run's earlier attempt: no lease can be this run's yet); returns how many are due again."""
    holders = resources.inbox.lease_holders(source)
    ended = [owner] if owner in holders else []
    run_ids = []
    for holder in holders:
        # A holder that is no flow run's id (a claimer outside Prefect): its lease runs out on its own.
        with contextlib.suppress(ValueError):
            if holder != owner:
                run_ids.append(uuid.UUID(holder))
    if run_ids:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids)), limit=len(run_ids)
            )
        ended += [str(run.id) for run in runs if run.state is not None and run.state.is_final()]
    given_back = 0
    for holder in ended:
        released = _released(resources, holder, f"lease released: run {holder} had ended")
        given_back += len(released.retry)
    if ended:
        get_run_logger().info(
            "Gave back %d %s item(s) held by %d run(s) that had ended", given_back, source, len(ended)
        )
    return given_back


@task(name="claim-inbox-items", **STORE_TASK_OPTIONS)
def claim_items(resources: Resources, source: str, limit: int, owner: str) -> list[Item]:
    """Lease up to ``limit`` due items of ``source`` to ``owner`` (several drains may run at once);
    first, items whose lease ran out on their last attempt die, each announced."""
    for item_id in resources.inbox.bury_expired(source):
        _announce_dead(source, item_id, LEASE_EXPIRED_EVERY_TIME)
    lease = resources.settings.inbox_lease_seconds
    return resources.inbox.claim(source, limit=limit, lease_seconds=lease, owner=owner)


@task(name="record-outcomes", **STORE_TASK_OPTIONS)
def record_outcomes(
    resources: Resources, source: str, outcomes: Sequence[Outcome], owner: str
) -> dict[str, int]:
    """Write outcomes back (only for items this drain still holds, the others counted as refused);
    emits an event per dead item."""
    settled = resources.inbox.settle(outcomes, owner)
    for item_id, reason in settled.dead:
        _announce_dead(source, item_id, reason)
    if settled.counts["refused"]:
        get_run_logger().warning(
            "%d outcome(s) not written: their leases ran out and another drain holds the items "
            "(raise INBOX_LEASE_SECONDS or lower the batch size)",
            settled.counts["refused"],
        )
    return settled.counts


@task(name="list-records-not-sent", **STORE_TASK_OPTIONS)
def list_not_sent(
    resources: Resources, not_sent: NotSent, skipped: Callable[[Item], str] | None = None
) -> list[dict[str, str]]:
    """The run's records that did not go through, as its per-record table's rows (masked): each with
    its status, error and what happens next, read from the inbox as the run leaves it. ``skipped``
    says what follows a skipped record (the recipe knows; the inbox does not)."""
    noted = not_sent.shown()
    items = resources.inbox.get_many(n.item_id for n in noted)
    rows = []
    for entry in noted:
        item = items.get(entry.item_id)
        if item is None or item.status == "delivered":
            continue
        rows.append(
            {
                "identity": entry.identity,
                "reference": entry.reference,
                "status": item.status,
                "error": item.last_error or "",
                "next": next_step(item, resources.settings.inbox_max_attempts, skipped),
            }
        )
    return rows


def claim_batch(resources: Resources, source: str, limit: int, owner: str, batch_no: int) -> list[Item]:
    """``claim_items``, its task run named by the batch it claims ("claim customersdot batch 3, up to
    1000")."""
    named = claim_items.with_options(task_run_name=f"claim {source} batch {batch_no}, up to {limit}")
    return named(resources, source, limit, owner)


def due_backlog(resources: Resources, source: str) -> int:
    """How many items of ``source`` are still due (a drain's "to do" for its progress). A plain call,
    not a task: it is asked every few seconds and a task run each time would only fill the run's list."""
    return resources.inbox.due_count(source)


def outcome_recorder(
    resources: Resources, source: str, owner: str
) -> Callable[[list[Outcome]], dict[str, int]]:
    """``record_outcomes`` for one drain, called with its outcomes unwalked, each task run named by how
    many it writes."""

    def record(outcomes: list[Outcome]) -> dict[str, int]:
        named = record_outcomes.with_options(task_run_name=f"record {len(outcomes)} {source} outcome(s)")
        return named(resources, source, unwalked(outcomes), owner)

    return record


@task(name="record-consent-ledger", **STORE_TASK_OPTIONS)
def record_suppressions(
    resources: Resources,
    items: Sequence[Item],
    decisions: Sequence[OptOutDecision],
    outcomes: Sequence[Outcome] = (),
) -> None:
    """Move the ledger after Iterable answered: applied for people opted out (or found so), looked at
    again later for people Iterable does not know yet, unless their item is retried soon."""
    retried = {o.item_id for o in outcomes if o.status == "retry"}
    retrying = [item_email(item) for item in items if item.id in retried]
    settle_ledger(resources.inbox.ledger, [item_email(item) for item in items], decisions, retrying)


@task(name="queue-opt-outs-of-written-people", **STORE_TASK_OPTIONS)
def queue_optouts_of_written(resources: Resources, emails: Sequence[str], by: str) -> tuple[set[str], int]:
    """Queue the opt-out of each suppressed person among ``emails``, just written to Iterable by ``by``,
    due once Iterable can have applied the write; returns their normalised addresses (their custom
    events wait for the opt-out) and how many opt-outs are new."""
    delay = resources.settings.consent_written_retry_seconds
    return queue_for_written_people(resources.inbox, emails, by, delay)


def consent_gate(resources: Resources, by: str) -> Callable[[list[str]], set[str]]:
    """``queue_optouts_of_written`` for one writer (the CustomersDot chain, a sync); a new opt-out
    starts a run of the opt-out drain, so it lands in seconds, not at the drain's next schedule."""

    def gate(emails: list[str]) -> set[str]:
        # One indexed read on every batch; the task (a run in the UI) only when someone is suppressed.
        if not resources.inbox.ledger.pending_among(normalise_email(email) for email in emails):
            return set()
        held, queued = queue_optouts_of_written(resources, emails, by)
        if queued:
            start_optout_drain(resources)
        return held

    return gate


def suppression_check(resources: Resources) -> Callable[[list[str]], set[str]]:
    """The consent ledger's answer for a marketing list sync: which of these addresses (normalised) are
    under a suppression, so they are held back instead of added. One indexed read per batch."""

    def check(emails: list[str]) -> set[str]:
        return suppressed_addresses(resources.inbox.ledger, emails)

    return check


@task(name="seconds-to-next-opt-out", **STORE_TASK_OPTIONS)
def seconds_to_next_pending(resources: Resources, source: str) -> float | None:
    """Seconds until the first pending item of ``source`` queued with a delay is due, or None."""
    at = resources.inbox.next_pending_at(source)
    return None if at is None else max(0.0, (at - datetime.now(UTC)).total_seconds())


@task(name="skip-lifted-opt-outs", **STORE_TASK_OPTIONS)
def skip_lifted(resources: Resources, items: Sequence[Item]) -> tuple[list[Item], list[Outcome]]:
    """The items still to opt out, and a skipped outcome (audited) for each whose lead subscribed again
    in Marketo since (their choice stands: nothing is written to Iterable for them)."""
    lifted = lifted_items(resources.inbox, items)
    reason = "subscribed again in Marketo since the unsubscribe"
    for item in items:
        if item.id in lifted:
            resources.inbox.finish_attempt(item, "skipped", {"detail": reason, "retryable": False})
    return [i for i in items if i.id not in lifted], [Outcome(i, "skipped", reason) for i in sorted(lifted)]


@task(name="queue-due-opt-outs", **STORE_TASK_OPTIONS)
def queue_due_optouts(resources: Resources) -> int:
    """Queue again the suppressions whose person may exist by now (looked at with backoff, for
    CONSENT_RECHECK_DAYS); returns how many were queued."""
    return requeue_due(resources.inbox, timedelta(days=resources.settings.consent_recheck_days))


@task(name="begin-opt-out-audit", **STORE_TASK_OPTIONS)
def begin_audit(resources: Resources, items: Sequence[Item]) -> None:
    """One "attempting" audit record per item and attempt, before anything is written to Iterable, so a
    crash at any later point leaves a trace of the attempt."""
    resources.inbox.begin_attempts([(item, audit_trigger(item.payload or {})) for item in items])


@task(name="record-opt-out-audit", **STORE_TASK_OPTIONS)
def record_audit(resources: Resources, items: Sequence[Item], decisions: Sequence[OptOutDecision]) -> int:
    """Finalise each item's attempt record with the decision and Iterable's answer (a record is added
    when none was begun)."""
    for item, decision in zip(items, decisions, strict=True):
        response = {"detail": decision.detail, "retryable": decision.retryable}
        if resources.inbox.finish_attempt(item, decision.outcome, response):
            continue
        payload = item.payload or {}
        resources.inbox.add_audit(
            audit_trigger(payload),
            payload.get("leadId", ""),
            payload.get("activityIds", []),
            decision.outcome,
            response,
        )
    return len(items)
