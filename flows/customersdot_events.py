"""Recipe 1: drain CustomersDot events from the inbox into Iterable profiles and Journey-starting events.

Each claimed batch goes through users/bulkUpdate, then its events through events/trackBulk with ids
derived from CustomersDot's event ids, so a re-send updates Iterable's event instead of adding one.
Several batches are in flight at once so both endpoints' rate limits are used together. The inbox is
the retry loop: whatever did not pass is scheduled again there, and the run ends when nothing is due.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import ValidationError

from clients.errors import ApiError, RetryableError
from clients.iterable_models import event_id_from
from config.settings import get_settings
from inbox.contracts import customersdot_event_adapter
from inbox.mapping import load_mapping, to_iterable
from inbox.store import Item
from tasks.inbox import Outcome, claim_items, record_outcomes
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


def _result(future: PrefectFuture[ItemsReport], size: int) -> ItemsReport:
    """The task's report, or every item failed the way the whole request did."""
    try:
        return future.result()
    except ApiError as error:
        return ItemsReport.whole_request_failed(size, error)


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


@flow(
    name="customersdot-events",
    description="Drain CustomersDot events from the inbox into Iterable (profiles, then events).",
    task_runner=ThreadPoolTaskRunner(max_workers=8),  # type: ignore[arg-type]
)
def customersdot_drain(batch_size: int | None = None, max_batches: int | None = None) -> dict[str, int]:
    """Deliver every due CustomersDot event; returns counts (received, sent, skipped, failed, dead)."""
    settings = get_settings()
    batch_size = batch_size or settings.drain_batch_size
    depth = max(1, settings.drain_batches_in_flight)
    not_found_delay = settings.event_not_found_retry_seconds
    mapping = load_mapping()
    owner = f"customersdot-drain-{flow_run.id or 'local'}"
    counts: Counter[str] = Counter()
    progress = Progress("CustomersDot events delivered")
    upserting: deque[tuple[Batch, PrefectFuture[ItemsReport]]] = deque()
    tracking: deque[tuple[Batch, list[Outcome], list[int], PrefectFuture[ItemsReport]]] = deque()
    claimed_batches = 0
    exhausted = False
    fatal: ApiError | None = None

    def settle(outcomes: list[Outcome]) -> None:
        if outcomes:
            # quote(): Prefect would otherwise walk every item of a large list looking for futures.
            counts.update(record_outcomes(SOURCE, quote(outcomes), owner))

    while True:
        while not exhausted and len(upserting) + len(tracking) < depth:
            if max_batches is not None and claimed_batches >= max_batches:
                exhausted = True
                break
            items = claim_items(SOURCE, batch_size, owner)
            if not items:
                exhausted = True
                break
            claimed_batches += 1
            counts["received"] += len(items)
            batch = prepare(items, mapping)
            settle(batch.settled)
            if batch.users:
                upserting.append((batch, _upsert.submit(quote(batch.users))))
        if upserting and (len(tracking) == 0 or _done(upserting[0][1])):
            batch, future = upserting.popleft()
            report = _result(future, len(batch.users))
            failed: list[Outcome] = []
            passed: list[int] = []
            for index, item_id in enumerate(batch.item_ids):
                outcome = _outcome(item_id, report, index, not_found_delay)
                (failed.append(outcome) if outcome else passed.append(index))
            refused = _fatal(future)
            if refused is not None:
                failed = _put_back(failed)
            events = [batch.events[i] for i in passed]
            tracking.append((batch, failed, passed, _track.submit(quote(events))))
            fatal = fatal or refused
        elif tracking:
            batch, failed, passed, future = tracking.popleft()
            report = _result(future, len(passed))
            outcomes = list(failed)
            for index, position in enumerate(passed):
                item_id = batch.item_ids[position]
                outcomes.append(
                    _outcome(item_id, report, index, not_found_delay) or Outcome(item_id, "delivered")
                )
            counts["sent"] += len(passed)
            refused = _fatal(future)
            settle(_put_back(outcomes) if refused is not None else outcomes)
            fatal = fatal or refused
            progress.update(counts["delivered"], counts["received"])
        elif exhausted:
            break

    summary = {name: counts[name] for name in ("received", "sent", "delivered", "skipped", "retry", "dead")}
    summary["failed"] = counts["retry"] + counts["dead"]
    publish_counts(SOURCE, summary, "CustomersDot events drained into Iterable")
    if counts["dead"]:
        emit_alert(SOURCE, "inbox.dead", {"dead": counts["dead"]})
    if fatal is not None:
        # Items were put back for a later run; fail this one so operators and automations see why.
        raise fatal
    return summary


def _put_back(outcomes: list[Outcome]) -> list[Outcome]:
    """The request was refused for the account, not for the items: they wait for the next run."""
    return [Outcome(o.item_id, "retry", o.reason, delay=0.0) if o.status == "dead" else o for o in outcomes]


def _done(future: PrefectFuture[Any]) -> bool:
    """Whether a submitted task finished; asks the API only when the future wraps nothing local."""
    wrapped = getattr(future, "wrapped_future", None)
    # future.state reads the task run from the API each time it is not final yet: too slow to poll.
    return bool(wrapped.done()) if wrapped is not None else future.state.is_final()


def _fatal(future: PrefectFuture[ItemsReport]) -> ApiError | None:
    """A whole-request refusal that is not about the items (bad API key, forbidden): fail the run."""
    try:
        future.result()
    except RetryableError:
        return None
    except ApiError as error:
        return error if error.status in (401, 403) else None
    return None
