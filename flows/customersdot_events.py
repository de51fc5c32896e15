"""Recipe 1: CustomersDot events in the inbox become Iterable profiles and Journey-starting events.

A batch is claimed only when one of ``DRAIN_BATCHES_IN_FLIGHT`` places is free; it is then delivered
on its own (profiles through users/bulkUpdate, then its events through events/trackBulk, then every
item's outcome) while the next batch is claimed. The inbox is the retry loop: what did not pass is due
again there, and the run ends when nothing is due.
"""

from __future__ import annotations

from collections.abc import Mapping

from prefect import flow

from iterable_recipes.customersdot.drain import SOURCE, CustomersDotDrain, fewer_collections
from iterable_recipes.pipeline import BatchPipeline
from iterable_recipes.resources import run_resources
from iterable_recipes.sentences import error_text
from tasks.checks import check_before_run
from tasks.iterable import event_sender, profile_sender
from tasks.logs import capture_library_logs, run_logger
from tasks.reporting import Progress, emit_alert, publish_found, publish_not_sent
from tasks.store import (
    RELEASE_LEASES_ON_END,
    claim_batch,
    consent_gate,
    due_backlog,
    list_not_sent,
    outcome_recorder,
    release_ended_runs,
    run_owner,
)

SETTLED = ("delivered", "skipped", "retry", "dead", "held", "refused")


def settled(counts: Mapping[str, int]) -> int:
    """How many claimed events the drain has settled so far (whatever the outcome)."""
    return sum(counts.get(name, 0) for name in SETTLED)


@flow(
    name="customersdot-events",
    description="Drain CustomersDot events from the inbox into Iterable (profiles, then events).",
    **RELEASE_LEASES_ON_END,
)
def customersdot_drain(batch_size: int | None = None, max_batches: int | None = None) -> dict[str, int]:
    """Deliver every due CustomersDot event; returns counts (received, sent, skipped, failed, dead)."""
    with run_resources() as resources, fewer_collections():
        capture_library_logs()
        logger = run_logger()
        settings = resources.settings
        check_before_run(resources, ["iterable_key"])
        owner = run_owner()
        release_ended_runs(resources, SOURCE, owner)
        drain = CustomersDotDrain(
            resources.event_mapping,
            send_profiles=profile_sender(resources),
            send_events=event_sender(resources),
            settle=outcome_recorder(resources, SOURCE, owner),
            not_found_delay=settings.event_not_found_retry_seconds,
            consent=consent_gate(resources, "the CustomersDot chain"),
            hold_seconds=settings.consent_hold_seconds,
            report=logger.log,
        )
        limit = batch_size or settings.drain_batch_size
        progress = Progress(
            "CustomersDot events settled", f"{SOURCE}-progress", "events", settings.recipes_progress_seconds
        )
        batches = 0
        with BatchPipeline(settings.drain_batches_in_flight, "customersdot-batch") as pipeline:
            for batch_no, slot in enumerate(pipeline.slots(max_batches), start=1):
                if drain.stopped or not (items := claim_batch(resources, SOURCE, limit, owner, batch_no)):
                    break
                batches = batch_no
                slot.run(drain.deliver, items, batch_no)
                # A slot is free again when a batch settled: the moment to show how far the run got.
                if progress.due():
                    received = drain.counts["received"]
                    progress.update(settled(drain.counts), received + due_backlog(resources, SOURCE))
        summary = drain.summary()
        progress.update(settled(summary), summary["received"], final=True)
        publish_found(SOURCE, summary, "CustomersDot events drained into Iterable")
        if total := drain.not_sent.total:
            publish_not_sent(
                f"{SOURCE}-not-sent",
                list_not_sent(resources, drain.not_sent),
                total,
                f"{total:,} CustomersDot event(s) this run did not deliver, and what happens next "
                "(addresses masked; reference = inbox id for `recipes inbox`)",
            )
        if summary["dead"]:
            emit_alert(SOURCE, "inbox.dead", {"dead": summary["dead"]})
        logger.info(drain.sentence(batches))
        if drain.fatal is not None:
            # Items were put back for a later run; fail this one so operators and automations see why
            # (the state message is the error's endpoint, status, code and masked text).
            logger.error(
                "Stopped claiming: Iterable refused the account (%s). The events of the batches in "
                "flight are due again at once; fix the key or its permissions, then retry this run.",
                error_text(drain.fatal),
            )
            raise drain.fatal
        return summary
