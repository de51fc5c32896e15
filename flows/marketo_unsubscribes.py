"""Recipe 2: Marketo unsubscribes become Iterable opt-outs, only for people Iterable already knows.

Two flows. The poll (one run at a time: it owns the cursors) queues unsubscribes from Marketo's
activities and lead changes into the inbox, where the webhook also puts them, keyed per lead. The
opt-out drain (no concurrency limit: claims make concurrent drains safe) looks each person up, skips
people Iterable does not know and people already opted out, opts out the rest, and leaves an audit
record per decision. Every unsubscribe is also in the consent ledger: a person Iterable did not know is
looked up again with backoff (the drain first queues those due), and the CustomersDot drain queues the
opt-out of a suppressed person it has just written, due once Iterable can have applied the write, and
starts a drain run for it; while Iterable does not show that person yet, the item is tried again every
CONSENT_WRITTEN_RETRY_SECONDS (a few times, the run waiting for it), so the opt-out lands as soon as the
person exists.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime

from prefect import flow

from iterable_recipes.not_sent import NotSent
from iterable_recipes.optouts.decisions import (
    WRITTEN_TRIES,
    after_skip,
    decisions_sentence,
    describe_item,
    item_email,
    outcome_for,
    unknown_retry_for,
    went_through,
)
from iterable_recipes.optouts.keys import SOURCE
from iterable_recipes.optouts.poll import STREAMS
from iterable_recipes.resources import Resources, run_resources
from iterable_recipes.store import Item
from tasks.checks import check_before_run
from tasks.iterable import opt_out_batch
from tasks.logs import capture_library_logs, run_logger
from tasks.marketo import poll_unsubscribes
from tasks.reporting import Progress, emit_alert, publish_counts, publish_found, publish_not_sent
from tasks.store import (
    RELEASE_LEASES_ON_END,
    begin_audit,
    claim_batch,
    due_backlog,
    list_not_sent,
    queue_due_optouts,
    record_audit,
    record_outcomes,
    record_suppressions,
    release_ended_runs,
    run_owner,
    seconds_to_next_pending,
    skip_lifted,
)

OPT_OUT_BATCH = 500
OPT_OUT_COUNTS = (
    "received",
    "opted_out",
    "not_in_iterable",
    "already_opted_out",
    "failed",
    "retry",
    "dead",
    "refused",
    "requeued",
    "lifted",
)


@flow(
    name="marketo-opt-outs",
    description="Opt Marketo unsubscribes out of Iterable marketing email.",
    **RELEASE_LEASES_ON_END,
)
def marketo_optout_drain(batch_size: int = OPT_OUT_BATCH, additive: bool | None = None) -> dict[str, int]:
    """Drain every due opt-out, and those due within seconds; returns counts (received, opted_out,
    not_in_iterable, ... , dead)."""
    with run_resources() as resources:
        capture_library_logs()
        logger = run_logger()
        use_additive = resources.settings.iterable_optout_additive if additive is None else additive
        check_before_run(resources, ["consent"])
        owner = run_owner()
        release_ended_runs(resources, SOURCE, owner)
        counts: Counter[str] = Counter({"requeued": queue_due_optouts(resources)})
        if counts["requeued"]:
            logger.info("Queued %d opt-out(s) again for people Iterable may know by now.", counts["requeued"])
        progress = Progress(
            "Marketo unsubscribes settled",
            "marketo-opt-outs-progress",
            "opt-outs",
            resources.settings.recipes_progress_seconds,
        )
        not_sent = NotSent(describe_item, went_through=went_through)
        batch_no = 0
        waited = 0.0
        while True:
            retried_soon = 0
            while claimed := claim_batch(resources, SOURCE, batch_size, owner, batch_no + 1):
                if batch_no and progress.due():  # the previous batch is settled
                    progress.update(counts["received"], counts["received"] + due_backlog(resources, SOURCE))
                batch_no += 1
                retried_soon += _opt_out_batch(
                    resources, batch_no, claimed, owner, use_additive, counts, not_sent
                )
            pause = _pause_for_soon_items(resources, retried_soon, waited)
            if pause is None:
                break
            time.sleep(pause)
            waited += pause
        summary = {name: counts[name] for name in OPT_OUT_COUNTS}
        progress.update(counts["received"], counts["received"], final=True)
        logger.info(_optouts_sentence(summary, batch_no))
        publish_found("marketo-opt-outs", summary, "Marketo unsubscribes opted out in Iterable")
        if total := not_sent.total:
            publish_not_sent(
                "marketo-opt-outs-not-sent",
                list_not_sent(resources, not_sent, after_skip),
                total,
                f"{total:,} unsubscribe(s) this run did not write to Iterable, and what happens next "
                "(addresses masked; reference = Marketo lead id and inbox id)",
            )
        if counts["dead"]:
            emit_alert("marketo-opt-outs", "inbox.dead", {"dead": counts["dead"]})
        return summary


def _optouts_sentence(summary: dict[str, int], batches: int) -> str:
    """The opt-out drain's closing line: what it took, what it did, and what it left for later."""
    if not summary["received"]:
        return "No opt-outs were due."
    return (
        f"Opt-out drain done: {summary['received']:,} unsubscribe(s) in {batches} batch(es); "
        f"{summary['opted_out']:,} opted out, {summary['not_in_iterable']:,} not in Iterable (looked up "
        f"again later), {summary['already_opted_out']:,} already opted out; {summary['retry']:,} due "
        f"again later, {summary['dead']:,} dead."
    )


def _opt_out_batch(
    resources: Resources,
    batch_no: int,
    claimed: list[Item],
    owner: str,
    additive: bool,
    counts: Counter[str],
    not_sent: NotSent,
) -> int:
    """Opt one claimed batch out, audit and settle it, and say so; returns how many of its items are
    retried soon (people we have just written, whom Iterable does not show yet)."""
    counts["received"] += len(claimed)
    begin_audit(resources, claimed)
    items, lifted = skip_lifted(resources, claimed)
    written = record_outcomes(resources, SOURCE, lifted, owner)
    counts.update(written)
    not_sent.note(claimed, lifted, written)
    counts["lifted"] += len(lifted)
    if not items:
        return 0
    decisions = opt_out_batch(resources, batch_no, [item_email(item) for item in items], additive)
    retry_seconds = resources.settings.consent_written_retry_seconds
    outcomes = [
        outcome_for(item.id, d, unknown_retry_for(item, retry_seconds))
        for item, d in zip(items, decisions, strict=True)
    ]
    record_audit(resources, items, decisions)
    record_suppressions(resources, items, decisions, outcomes)
    counts.update(d.outcome for d in decisions)
    written = record_outcomes(resources, SOURCE, outcomes, owner)
    counts.update(written)
    not_sent.note(items, outcomes, written)
    run_logger().info(decisions_sentence(batch_no, decisions))
    return sum(1 for o in outcomes if o.status == "retry" and o.delay == retry_seconds)


def _pause_for_soon_items(resources: Resources, retried_soon: int, waited: float) -> float | None:
    """Seconds to wait for opt-outs due within CONSENT_WRITTEN_RETRY_SECONDS (queued after our own
    write of the person, or retried by this run for that reason), or None to end the run.

    Waiting here lands them seconds after Iterable applied the write; a new run would start only at
    the next schedule. The wait is bounded, so a person Iterable never shows does not hold the run.
    """
    window = resources.settings.consent_written_retry_seconds
    if waited >= window * (WRITTEN_TRIES + 1):
        return None
    pending = seconds_to_next_pending(resources, SOURCE)
    candidates = [s for s in (pending, window if retried_soon else None) if s is not None and s <= window]
    return min(candidates) + 0.05 if candidates else None


@flow(name="marketo-unsubscribe-poll", description="Poll Marketo for unsubscribes (the webhook's backstop).")
def marketo_poll(start: datetime | None = None, drain: bool = True) -> dict[str, int]:
    """Queue new unsubscribes from both streams, then drain the opt-outs when anything was queued."""
    with run_resources() as resources:
        capture_library_logs()
        check_before_run(resources, ["marketo"])
        counts: Counter[str] = Counter()
        for stream in STREAMS:
            counts.update(
                {f"{stream}_{k}": v for k, v in poll_unsubscribes(resources, stream, start).items()}
            )
        queued = counts["activities_queued"] + counts["lead_changes_queued"]
        summary = dict(counts) | {"queued": queued}
        run_logger().info(
            "Queued %d Marketo unsubscribe(s) for opt-out (%d from activities, %d from lead changes).",
            queued,
            counts["activities_queued"],
            counts["lead_changes_queued"],
        )
        publish_counts("marketo-unsubscribe-poll", summary, "Marketo unsubscribes queued for opt-out")
        unresolved = counts["activities_unresolved"] + counts["lead_changes_unresolved"]
        if unresolved:
            run_logger().warning(
                "%d unsubscribe(s) name a lead without an address, or one deleted or merged: each is in "
                "the opt-out audit (outcome unresolved); opt the person out by hand.",
                unresolved,
            )
            emit_alert("marketo-unsubscribe-poll", "optouts.unresolved", {"unresolved": unresolved})
        if drain and queued:
            marketo_optout_drain()
        return summary
