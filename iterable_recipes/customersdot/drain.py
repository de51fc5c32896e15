"""The CustomersDot drain's steps: turn claimed items into bulk bodies, deliver a batch, record outcomes.

A batch goes through users/bulkUpdate, then the events of the people accepted through events/trackBulk
(ids derived from CustomersDot's, so a re-send updates Iterable's event instead of adding one), then
every item's outcome is written back to the inbox by the drain that holds its lease. An item is
delivered only when Iterable accepted both its profile and its event.
"""

from __future__ import annotations

import gc
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prefect import Task
from prefect.utilities.annotations import quote
from pydantic import ValidationError

from iterable_recipes.clients.errors import ApiError, RetryableError
from iterable_recipes.clients.iterable_models import event_id_from
from iterable_recipes.customersdot.contract import customersdot_event_adapter
from iterable_recipes.customersdot.mapping import load_mapping, to_iterable
from iterable_recipes.outcomes import ItemsReport
from iterable_recipes.store.inbox import Item
from tasks.iterable import track_events, upsert_users
from tasks.store import Outcome, record

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


class Deliveries:
    """What the worker threads share: the counts, and why the drain stopped claiming."""

    def __init__(self, owner: str, not_found_delay: float) -> None:
        self.owner = owner
        self.not_found_delay = not_found_delay
        self.mapping = load_mapping()  # a bad mapping file fails the run before anything is claimed
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

    def deliver(self, items: list[Item], slots: threading.BoundedSemaphore) -> None:
        """One batch: profiles, then the events of those accepted, then every item's outcome.
        An item is delivered only when Iterable accepted both its profile and its event."""
        try:
            batch = prepare(items, self.mapping)
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


def _put_back(outcomes: list[Outcome]) -> list[Outcome]:
    """The request was refused for the account, not for the items: they wait for the next run."""
    return [Outcome(o.item_id, "retry", o.reason, delay=0.0) if o.status == "dead" else o for o in outcomes]
