"""Recipe 1: drain CustomersDot events from the inbox into Iterable profiles and Journey-starting events.

The flow's thread only claims: it takes the next batch as soon as one of the
``drain_batches_in_flight`` slots is free. Each batch then goes through its own worker thread
(prepare, bulkUpdate, trackBulk, outcomes: tasks/customersdot.py), so sends never wait for bookkeeping.
A slot is freed only once the batch's outcomes are written, so at most that many batches are leased
at any time: all a crash can make us send again. The inbox is the retry loop: whatever did not pass is
scheduled again there, and the run ends when nothing is due.
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from prefect import flow
from prefect.runtime import flow_run

from iterable_recipes.customersdot.drain import SOURCE, Deliveries, fewer_collections
from iterable_recipes.settings import get_settings
from tasks.reporting import Progress, emit_alert, publish_counts
from tasks.store import claim


@flow(
    name="customersdot-events",
    description="Drain CustomersDot events from the inbox into Iterable (profiles, then events).",
)
def customersdot_drain(batch_size: int | None = None, max_batches: int | None = None) -> dict[str, int]:
    """Deliver every due CustomersDot event; returns counts (received, sent, skipped, failed, dead)."""
    settings = get_settings()
    batch_size = batch_size or settings.drain_batch_size
    depth = max(1, settings.drain_batches_in_flight)
    owner = f"customersdot-drain-{flow_run.id or 'local'}"
    progress = Progress("CustomersDot events delivered")
    # A slot per batch in flight, taken before its claim and given back once its outcomes are written.
    slots = threading.BoundedSemaphore(depth)
    sending: list[Future[None]] = []
    claimed_batches = 0
    with (
        fewer_collections(),
        ThreadPoolExecutor(max_workers=depth, thread_name_prefix="customersdot-batch") as pool,
    ):
        drain = Deliveries(owner, settings.event_not_found_retry_seconds)
        while max_batches is None or claimed_batches < max_batches:
            slots.acquire()
            if drain.stopped:
                slots.release()
                break
            try:
                items = claim(SOURCE, batch_size, owner)
            except BaseException:
                slots.release()
                raise
            if not items:
                slots.release()
                break
            claimed_batches += 1
            drain.count("received", len(items))
            # Each worker runs in a copy of this context: its task runs belong to this flow run.
            context = contextvars.copy_context()
            sending.append(pool.submit(context.run, drain.deliver, items, slots))
            progress.update(drain.counts["delivered"], drain.counts["received"])
            sending = [f for f in sending if not f.done() or f.exception() is not None]
        for future in sending:
            future.result()  # a worker's unexpected error fails the run (its items' leases run out)
    counts = drain.counts
    progress.update(counts["delivered"], counts["received"])

    summary = {name: counts[name] for name in ("received", "sent", "delivered", "skipped", "retry", "dead")}
    summary["failed"] = counts["retry"] + counts["dead"]
    publish_counts(SOURCE, summary, "CustomersDot events drained into Iterable")
    if counts["dead"]:
        emit_alert(SOURCE, "inbox.dead", {"dead": counts["dead"]})
    if drain.fatal is not None:
        # Items were put back for a later run; fail this one so operators and automations see why.
        raise drain.fatal
    return summary
