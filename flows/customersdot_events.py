"""Recipe 1: drain CustomersDot events from the inbox into Iterable profiles and Journey-starting events.

Each claimed batch goes through users/bulkUpdate, then its events through events/trackBulk with ids
derived from CustomersDot's event ids, so a re-send updates Iterable's event instead of adding one.
Several batches are in flight at once so both endpoints' rate limits are used together. The inbox is
the retry loop: whatever did not pass is scheduled again there, and the run ends when nothing is due.

The flow's thread only claims: it takes the next batch as soon as one of the
``drain_batches_in_flight`` slots is free. Each batch then goes through its own worker thread
(prepare, bulkUpdate, trackBulk, outcomes), so sends never wait for bookkeeping. A slot is freed only once the
batch's outcomes are written, so at most that many batches are leased at any time: all a crash can
make us send again. Claims and outcomes are plain inbox calls (a task run each would cost more than
the database work); their counts end up in the run's counts artifact.
"""

from __future__ import annotations

import contextvars
import gc
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prefect import Task, flow
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote
from pydantic import ValidationError

from clients.errors import ApiError, RetryableError
from clients.iterable_models import event_id_from
from config.settings import get_settings
from inbox.contracts import customersdot_event_adapter
from inbox.mapping import load_mapping, to_iterable
from inbox.store import Item
from tasks.inbox import Outcome, claim, record
from tasks.iterable import track_events, upsert_users
from tasks.outcomes import ItemsReport
from tasks.reporting import Progress, emit_alert, publish_counts

SOURCE = "customersdot"
EVENT_ID_SOURCE = "cdot"
# The inbox retries whole batches; task-level retries would only hold the leases longer.
_upsert = upsert_users.with_options(retries=0)
_track = track_events.with_options(retries=0)


@dataclass
class Batch:
    """Claimed items that go to Iterable, with their profile and event bodies in the same order."""

    item_ids: list[int] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    settled: list[Outcome] = field(default_factory=list)


def prepare(items: list[Item], mapping: Any) -> Batch:
    """Turn claimed items into bulk bodies; items not to forward or no longer valid are settled here."""
    batch = Batch()
    for item in items:
        try:
            event = customersdot_event_adapter.validate_python(item.payload or {})
        except ValidationError as exc:
            batch.settled.append(
                Outcome(item.id, "dead", f"stored payload invalid: {exc.error_count()} errors")
            )
            continue
        mapped = to_iterable(event, mapping)
        if mapped is None:
            batch.settled.append(Outcome(item.id, "skipped", "not forwarded by the event mapping"))
            continue
        profile, event_name, event_fields = mapped
        email = event.person.email
        batch.item_ids.append(item.id)
        batch.users.append({"email": email, "dataFields": profile})
        batch.events.append(
            {
                "email": email,
                "eventName": event_name,
                "id": event_id_from(EVENT_ID_SOURCE, event.id),
                "createdAt": int(event.occurred_at.timestamp()),
                "dataFields": event_fields,
            }
        )
    return batch


def _outcome(item_id: int, report: ItemsReport, index: int, not_found_delay: float) -> Outcome | None:
    """None when the item passed this step; otherwise what to record."""
    failure = report.failures.get(index)
    if failure is None:
        return None
    if failure.category == "not_found":
        # Iterable applies profile updates asynchronously: the person is not visible yet.
        return Outcome(item_id, "retry", "Iterable has not applied the profile yet", delay=not_found_delay)
    if failure.retryable:
        return Outcome(item_id, "retry", failure.reason)
    return Outcome(item_id, "dead", f"{failure.category}: {failure.reason}")


class _Deliveries:
    """What the worker threads share: the counts, and why the drain stopped claiming."""

    def __init__(self, owner: str, not_found_delay: float) -> None:
        self.owner = owner
        self.not_found_delay = not_found_delay
        self.counts: Counter[str] = Counter()
        self.fatal: ApiError | None = None
        self.broken = False
        self._lock = threading.Lock()

    @property
    def stopped(self) -> bool:
        """Stop claiming: Iterable refused the account, or a worker failed unexpectedly."""
        return self.fatal is not None or self.broken

    def count(self, name: str, n: int) -> None:
        with self._lock:
            self.counts[name] += n

    def settle(self, outcomes: list[Outcome]) -> None:
        """Write outcomes (only for items this drain still holds) and add them to the counts."""
        if outcomes:
            written = record(SOURCE, outcomes, self.owner)
            with self._lock:
                self.counts.update(written)

    def refused(self, error: ApiError | None) -> None:
        if error is not None:
            with self._lock:
                self.fatal = self.fatal or error

    def send(self, step: Task[..., ItemsReport], bodies: list[dict[str, Any]]) -> tuple[ItemsReport, bool]:
        """The step's report (every item failed the way the whole request did, when it raised), and
        whether the request was refused for the account (bad API key, forbidden): the run fails."""
        try:
            # quote(): Prefect would otherwise walk every item of a large list looking for futures.
            return step(quote(bodies)), False
        except RetryableError as error:
            return ItemsReport.whole_request_failed(len(bodies), error), False
        except ApiError as error:
            refusal = error.status in (401, 403)
            if refusal:
                self.refused(error)
            return ItemsReport.whole_request_failed(len(bodies), error), refusal

    def deliver(self, items: list[Item], mapping: Any, slots: threading.BoundedSemaphore) -> None:
        """One batch: profiles, then the events of those accepted, then every item's outcome.
        An item is delivered only when Iterable accepted both its profile and its event."""
        try:
            batch = prepare(items, mapping)
            self.settle(batch.settled)
            if not batch.users:
                return
            report, refused = self.send(_upsert, batch.users)
            failed: list[Outcome] = []
            passed: list[int] = []
            for index, item_id in enumerate(batch.item_ids):
                outcome = _outcome(item_id, report, index, self.not_found_delay)
                (failed.append(outcome) if outcome else passed.append(index))
            outcomes = _put_back(failed) if refused else failed
            if passed:
                report, refused = self.send(_track, [batch.events[i] for i in passed])
                for index, position in enumerate(passed):
                    item_id = batch.item_ids[position]
                    outcome = _outcome(item_id, report, index, self.not_found_delay)
                    outcomes.append(outcome or Outcome(item_id, "delivered"))
                self.count("sent", len(passed))
                if refused:
                    outcomes = _put_back(outcomes)
            self.settle(outcomes)
        except BaseException:
            # The batch's leases run out and a later drain takes its items; claim nothing more.
            self.broken = True
            raise
        finally:
            slots.release()


@contextmanager
def fewer_collections(threshold: int = 50_000) -> Iterator[None]:
    """Spare the drain most of Python's garbage collections while it runs, then restore them.

    A batch makes tens of thousands of short-lived objects; with the default threshold the collector
    runs hundreds of times per drain and each full pass walks every object Prefect and the imports
    hold (a quarter of the drain's CPU, measured). Freezing what exists before the drain keeps those
    out of every pass; a higher first threshold makes the passes rarer (cycles are still collected).
    The thresholds are back, and the objects collectable again, when the drain ends.
    """
    thresholds = gc.get_threshold()
    gc.freeze()  # no collect() first: a full pass costs ~0.1 s; what it would free waits until the end
    gc.set_threshold(threshold, thresholds[1], thresholds[2])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


@flow(
    name="customersdot-events",
    description="Drain CustomersDot events from the inbox into Iterable (profiles, then events).",
)
def customersdot_drain(batch_size: int | None = None, max_batches: int | None = None) -> dict[str, int]:
    """Deliver every due CustomersDot event; returns counts (received, sent, skipped, failed, dead)."""
    settings = get_settings()
    batch_size = batch_size or settings.drain_batch_size
    depth = max(1, settings.drain_batches_in_flight)
    mapping = load_mapping()
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
        drain = _Deliveries(owner, settings.event_not_found_retry_seconds)
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
            sending.append(pool.submit(context.run, drain.deliver, items, mapping, slots))
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


def _put_back(outcomes: list[Outcome]) -> list[Outcome]:
    """The request was refused for the account, not for the items: they wait for the next run."""
    return [Outcome(o.item_id, "retry", o.reason, delay=0.0) if o.status == "dead" else o for o in outcomes]
