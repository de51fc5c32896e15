"""The CustomersDot drain's engine: claimed items become a profile batch, then an event batch, then outcomes.

A batch goes through users/bulkUpdate, then the events of the people accepted through events/trackBulk
(ids derived from CustomersDot's, so a re-send updates Iterable's event instead of adding one), then
every item's outcome is written back to the inbox by the drain that holds its lease. An item is
delivered only when Iterable accepted both its profile and its event. The sends and the writes are
given in (the flow passes its tasks), so this module knows nothing of Prefect.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from iterable_recipes.clients.errors import ApiError, RetryableError
from iterable_recipes.clients.iterable_models import BulkResult, FailureCategory, event_id_from
from iterable_recipes.customersdot.contract import customersdot_event_adapter
from iterable_recipes.customersdot.mapping import EventMapping, to_iterable
from iterable_recipes.identities import normalise_email
from iterable_recipes.masking import mask_email
from iterable_recipes.not_sent import NotSent
from iterable_recipes.sentences import answered, counted, error_text
from iterable_recipes.store import Item, Outcome

SOURCE = "customersdot"
EVENT_ID_SOURCE = "cdot"

# Sends one step of batch number ``batch_no`` (the number names the task run).
Send = Callable[[int, list[dict[str, Any]]], BulkResult]
Settle = Callable[[list[Outcome]], dict[str, int]]
# Told one line per batch, with its logging level: what was claimed, sent, answered and settled.
Report = Callable[[int, str], None]
# Given the people whose profiles Iterable just accepted: queues the opt-out of those under a consent
# suppression and returns their normalised addresses, whose events must wait for it.
ConsentGate = Callable[[list[str]], set[str]]
# A held event is looked at again this often, until the opt-out is in place or the hold runs out.
HOLD_RECHECK_SECONDS = 30.0
# The outcomes a batch's line names, in this order, with what each means for the item.
OUTCOME_WORDS = (
    ("delivered", "delivered"),
    ("skipped", "skipped (not forwarded)"),
    ("retry", "due again later"),
    ("held", "held for an opt-out"),
    ("dead", "dead"),
    ("refused", "not written (another drain holds them)"),
)


def _no_report(level: int, line: str) -> None:
    """The default ``report``: lines go nowhere."""


def outcomes_sentence(written: Mapping[str, int]) -> str:
    """The outcomes one batch wrote: "Outcomes: 998 delivered, 2 due again later"."""
    parts = [f"{written[name]:,} {words}" for name, words in OUTCOME_WORDS if written.get(name)]
    return "Outcomes: " + (", ".join(parts) if parts else "none written")


@dataclass
class Batch:
    """Claimed items that go to Iterable, with their profile and event bodies in the same order."""

    item_ids: list[int] = field(default_factory=list)
    received_at: list[datetime] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    settled: list[Outcome] = field(default_factory=list)


def prepare(items: list[Item], mapping: EventMapping) -> Batch:
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
        # The one key of a person everywhere (the ledger, the opt-out, the sync): Iterable folds case too.
        email = normalise_email(event.person.email)
        batch.item_ids.append(item.id)
        batch.received_at.append(item.created_at)
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


def describe_item(item: Item) -> tuple[str, str]:
    """A CustomersDot item for the run's per-record table: the masked person and the inbox id."""
    person = (item.payload or {}).get("person") or {}
    email = person.get("email") if isinstance(person, dict) else None
    return (mask_email(str(email)) if email else "(no address)", f"inbox {item.id}")


def _outcome(item_id: int, result: BulkResult, index: int, not_found_delay: float) -> Outcome | None:
    """None when the item passed this step; otherwise what to record."""
    failure = result.failures.get(index)
    if failure is None:
        return None
    if failure.category is FailureCategory.NOT_FOUND:
        # Iterable applies profile updates asynchronously: the person is not visible yet.
        return Outcome(item_id, "retry", "Iterable has not applied the profile yet", delay=not_found_delay)
    if failure.retryable:
        return Outcome(item_id, "retry", failure.reason)
    return Outcome(item_id, "dead", f"{failure.category}: {failure.reason}")


def _put_back(outcomes: list[Outcome]) -> list[Outcome]:
    """The request was refused for the account, not for the items: they wait for the next run."""
    return [Outcome(o.item_id, "retry", o.reason, delay=0.0) if o.status == "dead" else o for o in outcomes]


class CustomersDotDrain:
    """One drain run's state, shared by its worker threads: the counts, and why it stopped claiming.

    ``send_profiles`` and ``send_events`` send one batch (users/bulkUpdate, events/trackBulk) and raise
    an ``ApiError`` when the request as a whole failed; ``settle`` writes outcomes for this drain's items;
    ``report`` is told one line per batch.
    """

    def __init__(
        self,
        mapping: EventMapping,
        *,
        send_profiles: Send,
        send_events: Send,
        settle: Settle,
        not_found_delay: float,
        consent: ConsentGate | None = None,
        hold_seconds: float = 3600.0,
        report: Report = _no_report,
        not_sent: NotSent | None = None,
    ) -> None:
        self.mapping = mapping
        self._send_profiles = send_profiles
        self._send_events = send_events
        self._settle = settle
        self.not_found_delay = not_found_delay
        self._consent = consent
        self.hold_seconds = hold_seconds
        self._report = report
        self.not_sent = not_sent or NotSent(describe_item)
        self.counts: Counter[str] = Counter()
        self.fatal: ApiError | None = None
        self._lock = threading.Lock()

    @property
    def stopped(self) -> bool:
        """Stop claiming: Iterable refused the account (bad API key, forbidden)."""
        return self.fatal is not None

    def count(self, name: str, n: int) -> None:
        """Add ``n`` to count ``name`` (thread-safe)."""
        with self._lock:
            self.counts[name] += n

    def settle(self, outcomes: list[Outcome], items: list[Item]) -> dict[str, int]:
        """Write outcomes (only for items this drain still holds), add them to the counts and note the
        records that did not go through; returns what was written."""
        if not outcomes:
            return {}
        written = self._settle(outcomes)
        with self._lock:
            self.counts.update(written)
        self.not_sent.note(items, outcomes, written)
        return written

    def _send(
        self, send: Send, batch_no: int, bodies: list[dict[str, Any]], endpoint: str
    ) -> tuple[BulkResult, bool]:
        """The step's result (every item failed the way the whole request did, when it raised), and
        whether the request was refused for the account: the run then stops and fails."""
        try:
            return send(batch_no, bodies), False
        except RetryableError as error:
            return BulkResult.whole_request_failed(endpoint, len(bodies), error), False
        except ApiError as error:
            refusal = error.status in (401, 403)
            if refusal:
                with self._lock:
                    self.fatal = self.fatal or error
            return BulkResult.whole_request_failed(endpoint, len(bodies), error), refusal

    def deliver(self, items: list[Item], batch_no: int = 0) -> None:
        """One batch: profiles, then the events of those accepted, then every item's outcome; then
        one line saying so."""
        self.count("received", len(items))
        line = [f"Batch {batch_no}: claimed {counted(len(items), 'CustomersDot event')}"]
        written: Counter[str] = Counter()
        batch = prepare(items, self.mapping)
        written.update(self.settle(batch.settled, items))
        refusal = None
        if batch.users:
            outcomes, refusal = self._deliver_prepared(batch, batch_no, line)
            written.update(self.settle(outcomes, items))
        line.append(outcomes_sentence(written))
        if refusal is not None:
            line.append(
                f"Iterable refused the account ({error_text(refusal)}): this batch's items are due "
                "again at once and no more batches are claimed"
            )
        level = logging.WARNING if refusal is not None or written["dead"] else logging.INFO
        self._report(level, ". ".join(line) + ".")

    def _deliver_prepared(
        self, batch: Batch, batch_no: int, line: list[str]
    ) -> tuple[list[Outcome], ApiError | None]:
        """Send a prepared batch's profiles, then its events; the outcomes to write, and the error of
        a request refused for the account (else None). Adds what Iterable answered to ``line``."""
        result, refused = self._send(self._send_profiles, batch_no, batch.users, "users/bulkUpdate")
        line.append(answered(result, "profiles"))
        failed: list[Outcome] = []
        passed: list[int] = []
        for index, item_id in enumerate(batch.item_ids):
            outcome = _outcome(item_id, result, index, self.not_found_delay)
            (failed.append(outcome) if outcome else passed.append(index))
        outcomes = _put_back(failed) if refused else failed
        if passed and self._consent is not None:
            going = self._hold_suppressed(batch, passed, outcomes)
            if len(going) < len(passed):
                line.append(
                    f"Held back {counted(len(passed) - len(going), 'event')} for people waiting on "
                    "their opt-out"
                )
            passed = going
        if passed:
            events = [batch.events[i] for i in passed]
            result, refused_events = self._send(self._send_events, batch_no, events, "events/trackBulk")
            line.append(answered(result, "events"))
            for index, position in enumerate(passed):
                item_id = batch.item_ids[position]
                outcome = _outcome(item_id, result, index, self.not_found_delay)
                outcomes.append(outcome or Outcome(item_id, "delivered"))
            self.count("sent", len(passed))
            if refused_events:
                outcomes = _put_back(outcomes)
            refused = refused or refused_events
        return outcomes, (self.fatal if refused else None)

    def _hold_suppressed(self, batch: Batch, passed: list[int], outcomes: list[Outcome]) -> list[int]:
        """The positions whose events may go now; a person under a consent suppression waits (any
        custom event may start a Journey) until the opt-out, queued here, is in place. A hold spends no
        attempt; past ``hold_seconds`` since the event arrived the item dies with reason consent-hold."""
        assert self._consent is not None
        held = self._consent([batch.users[i]["email"] for i in passed])
        if not held:
            return passed
        now = datetime.now(UTC)
        going = []
        for position in passed:
            if normalise_email(batch.users[position]["email"]) not in held:
                going.append(position)
                continue
            item_id = batch.item_ids[position]
            if (now - batch.received_at[position]).total_seconds() >= self.hold_seconds:
                outcomes.append(
                    Outcome(item_id, "dead", "consent-hold: the opt-out was not in place in time")
                )
            else:
                reason = "consent-hold: waiting for the opt-out of this person"
                outcomes.append(Outcome(item_id, "hold", reason, delay=HOLD_RECHECK_SECONDS))
        return going

    def sentence(self, batches: int) -> str:
        """The run's closing line: what it received, in how many batches, and what became of it."""
        summary = self.summary()
        if not summary["received"]:
            return "No CustomersDot events were due."
        events = counted(summary["received"], "CustomersDot event")
        outcomes = outcomes_sentence(summary).lower()
        return f"Drained {events} in {counted(batches, 'batch', 'batches')}; {outcomes}."

    def summary(self) -> dict[str, int]:
        """The counts every CustomersDot drain run reports."""
        counts = dict(self.counts)
        names = ("received", "sent", "delivered", "skipped", "retry", "dead", "refused", "held")
        summary = {name: counts.get(name, 0) for name in names}
        summary["failed"] = summary["retry"] + summary["dead"]
        return summary


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
