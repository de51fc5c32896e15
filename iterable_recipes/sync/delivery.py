"""Deliver a planned sync run's batches to Iterable and accept each one in the warehouse once Iterable did.

Batches are read from the staging table, sent a few at a time (``sync_batches_in_flight``), and every
batch that finished is accepted in the background on a connection of its own, those finished within a
quarter second together: one append to the run's answer log (``sync/answers.py``), whose cost does not
grow with the snapshot, merged into the state in one transaction when the sending ends. Reading and
sending never wait for the warehouse's writes, and at most ``ACCEPT_BACKLOG_WINDOWS`` times
``sync_batches_in_flight`` batches are ever sent but not accepted, all a crash can make us send again.
The send of one batch is given in (the flow passes its task), so this module knows nothing of Prefect.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from iterable_recipes.clients.batching import batches, send_in_batches, send_splitting
from iterable_recipes.clients.iterable import IterableClient
from iterable_recipes.clients.iterable_models import BulkResult, Encoded, FailureCategory, encode_item
from iterable_recipes.clients.lookups import look_up_many, look_up_many_by_user_id
from iterable_recipes.identities import normalise_email
from iterable_recipes.masking import mask_emails
from iterable_recipes.sentences import counted, error_text, tally
from iterable_recipes.sync.accept import accept_batch
from iterable_recipes.sync.answers import merge_answers, record_failed
from iterable_recipes.sync.batches import iter_batches
from iterable_recipes.sync.change_log import CONSENT_HOLD, HELD_BACK
from iterable_recipes.sync.definitions import IdentityKind, SyncDefinition, SyncKind, SyncMode

# Finished batches wait up to this long to be accepted together: one append per group, not per batch
# (each Snowflake DML statement is a round trip of its own).
ACCEPT_EVERY_SECONDS = 0.25
# How many windows of batches may be sent but not yet accepted: all a crash can make us send again.
ACCEPT_BACKLOG_WINDOWS = 4
_CLOSING, _STOP = "closing", "stop"  # what the accept thread is told: no more batches; end now
# Room for a list request's wrapper: {"listId":<19 digits>,"subscribers":[],"updateExistingUsersOnly":true}.
LIST_ENVELOPE_BYTES = 128


@dataclass
class BatchReport:
    """Iterable's answer to one sync batch by position: rejected (with reasons) and unknown people."""

    batch_no: int
    sent: int = 0
    rejected: dict[int, str] = field(default_factory=dict)
    not_found: list[int] = field(default_factory=list)
    size: int = 0
    joined: int = 0  # list syncs: members Iterable added to the list
    left: int = 0  # list syncs: members Iterable removed from it

    def sentence(self, defn: SyncDefinition, batches: int) -> str:
        """The batch's log line: "Batch 3 of 40, 1,000 rows: Iterable accepted 998; 2 rejected (...),
        sent again by later runs; ..." (0-based ``batch_no``, shown 1-based as operators count)."""
        held = sum(1 for reason in self.rejected.values() if reason == CONSENT_HOLD)
        kept = sum(1 for reason in self.rejected.values() if reason == HELD_BACK)
        refused = [reason for reason in self.rejected.values() if reason not in (CONSENT_HOLD, HELD_BACK)]
        accepted = self.size - len(self.rejected) - len(self.not_found)
        parts = [
            f"Batch {self.batch_no + 1} of {batches}, {counted(self.size, 'row')}: "
            f"Iterable accepted {accepted:,}"
        ]
        if defn.is_list and (self.joined or self.left):
            parts[0] += f" ({self.joined:,} added to list {defn.list_id}, {self.left:,} removed)"
        if refused:
            parts.append(f"{len(refused):,} rejected ({tally(refused)}), sent again by later runs")
        if self.not_found:
            what = "never created in update mode" if looks_up_first(defn) else "unknown to Iterable"
            parts.append(f"{counted(len(self.not_found), 'person', 'people')} {what}, looked at again later")
        if held:
            parts.append(f"held back {counted(held, 'event')} for people waiting on their opt-out")
        if kept:
            parts.append(
                f"held back {counted(kept, 'member')} under a Marketo suppression (not added to a "
                "marketing list), looked at again by later runs"
            )
        return "; ".join(parts) + "."


def looks_up_first(defn: SyncDefinition, project_type: str = "email") -> bool:
    """Update mode where a write would create unknown people, so each is looked up first: profiles by
    email in any project; profiles by userId outside email-based projects (preferUserId false holds
    only in those, the spec); list members by email in an email-based project (updateExistingUsersOnly
    holds only outside those). A list subscribe by userId creates nobody in an email-based project."""
    if defn.mode is not SyncMode.UPDATE:
        return False
    email = defn.identity.kind is IdentityKind.EMAIL
    if defn.kind is SyncKind.USER_PROFILES:
        return email or project_type != "email"
    return defn.kind is SyncKind.LIST_MEMBERSHIP and email and project_type == "email"


def _look_up(client: IterableClient, defn: SyncDefinition, identities: list[str]) -> list[Any]:
    """Each identity's profile, None for "not in Iterable", or the error: getByEmail or byUserId."""
    if defn.identity.kind is IdentityKind.EMAIL:
        return look_up_many(client, identities)
    return look_up_many_by_user_id(client, identities)


def deliver_batch(
    client: IterableClient,
    defn: SyncDefinition,
    batch_no: int,
    items: Sequence[dict[str, Any]],
    consent: Callable[[list[str]], set[str]] | None = None,
    suppressed: Callable[[list[str]], set[str]] | None = None,
    project_type: str = "email",
    *,
    verified: bool = False,
) -> BatchReport:
    """Send one batch (users/bulkUpdate or events/trackBulk, or a list sync's changes through
    ``deliver_members``); unknown people are reported, never created.

    ``consent`` (email identities) queues the opt-out of each person under a consent suppression and
    names them: after a profile write it is called with the people Iterable accepted; before an event
    batch, the events of those it names are held back (rejected with reason consent-hold, so later runs
    send them once the opt-out is in place). Raises the ``ApiError`` of a request that failed as a whole:
    the batch is then not accepted. ``verified`` says every person of the batch was checked to exist
    before the run sent anything (``sync/existence.py``): update mode then looks nobody up again.
    """
    if defn.is_list:
        return deliver_members(client, defn, batch_no, items, suppressed, project_type)
    report = BatchReport(batch_no, size=len(items))
    positions = list(range(len(items)))
    if consent is not None and defn.kind is SyncKind.CUSTOM_EVENTS:
        held = consent([items[p]["email"] for p in positions])
        for position in [p for p in positions if normalise_email(items[p]["email"]) in held]:
            report.rejected[position] = CONSENT_HOLD
        positions = [p for p in positions if p not in report.rejected]
    if looks_up_first(defn, project_type) and not verified:
        known: list[int] = []
        key = defn.identity.kind.value
        for position, found in zip(
            positions, _look_up(client, defn, [items[p][key] for p in positions]), strict=True
        ):
            if isinstance(found, Exception):
                raise found  # a failed look-up is retryable or fatal for the batch, never "unknown"
            (known if found is not None else report.not_found).append(position)
        positions = known
    if positions:
        send = client.track_events if defn.kind is SyncKind.CUSTOM_EVENTS else client.bulk_update_users
        result = send_in_batches([items[p] for p in positions], send)
        report.sent = result.size
        for index, failure in result.failures.items():
            if failure.category is FailureCategory.NOT_FOUND:
                report.not_found.append(positions[index])
            else:
                report.rejected[positions[index]] = mask_emails(f"{failure.category}: {failure.reason}")
        if consent is not None and defn.kind is SyncKind.USER_PROFILES:
            failed = set(report.rejected) | set(report.not_found)
            consent([items[p]["email"] for p in positions if p not in failed])
    return report


def deliver_members(
    client: IterableClient,
    defn: SyncDefinition,
    batch_no: int,
    items: Sequence[dict[str, Any]],
    suppressed: Callable[[list[str]], set[str]] | None = None,
    project_type: str = "email",
) -> BatchReport:
    """Send one batch of a list sync: entering members through lists/subscribe, leaving ones through
    lists/unsubscribe (``channelUnsubscribe`` false), each request at most 1000 members and 4 MB.

    Nobody is created: ``updateExistingUsersOnly`` is sent true, and in an email-based project members
    keyed by email are looked up first (it creates unknown addresses whatever that flag says); unknown people
    are reported as not found. On a marketing list, ``suppressed`` (email identities -> the normalised
    addresses under a consent suppression) names the entering members held back: never sent, kept as
    ``HELD_BACK`` for later runs. It is required for a marketing list: without it the batch is refused.
    A leaving member Iterable does not know is not on the list: counted as removed. Raises the
    ``ApiError`` of a request that failed as a whole: the batch is then not accepted.
    """
    report = BatchReport(batch_no, size=len(items))
    entering = [p for p, item in enumerate(items) if item["action"] == "subscribe"]
    leaving = [p for p, item in enumerate(items) if item["action"] == "unsubscribe"]
    if defn.is_marketing_list and entering:
        if suppressed is None:
            raise ValueError(f"sync {defn.name}: a marketing list needs the consent ledger to send to")
        held = suppressed([items[p]["member"]["email"] for p in entering])
        for position in entering:
            if normalise_email(items[position]["member"]["email"]) in held:
                report.rejected[position] = HELD_BACK
        entering = [p for p in entering if p not in report.rejected]
    if looks_up_first(defn, project_type) and entering:
        known: list[int] = []
        emails = [items[p]["member"]["email"] for p in entering]
        for position, found in zip(entering, look_up_many(client, emails), strict=True):
            if isinstance(found, Exception):
                raise found  # a failed look-up is retryable or fatal for the batch, never "unknown"
            (known if found is not None else report.not_found).append(position)
        entering = known
    list_id = int(defn.list_id or 0)

    def subscribe(members: Sequence[Encoded]) -> BulkResult:
        return client.subscribe_to_list(list_id, members, update_existing_users_only=True)

    def unsubscribe(members: Sequence[Encoded]) -> BulkResult:
        return client.unsubscribe_from_list(list_id, members, channel_unsubscribe=False)

    for positions, send, joining in ((entering, subscribe, True), (leaving, unsubscribe, False)):
        if not positions:
            continue
        members = [encode_item(items[p]["member"]) for p in positions]
        chunks = batches(members, envelope_bytes=LIST_ENVELOPE_BYTES)
        result = BulkResult.merge("lists", [send_splitting(chunk, send) for chunk in chunks])
        report.sent += result.size
        done = result.size
        for index, failure in result.failures.items():
            if failure.category is FailureCategory.NOT_FOUND:
                if joining:
                    report.not_found.append(positions[index])
                    done -= 1
                # else: a person Iterable does not know is on no list; their removal is done.
            else:
                report.rejected[positions[index]] = mask_emails(f"{failure.category}: {failure.reason}")
                done -= 1
        if joining:
            report.joined = done
        else:
            report.left = done
    return report


DeliverBatch = Callable[[int, list[dict[str, Any]]], BatchReport]


class _Accepter:
    """Accepts finished batches on a connection and a thread of its own, those that finish within
    ``ACCEPT_EVERY_SECONDS`` of each other in one append.

    A batch holds a sending slot (``depth`` of them) until Iterable answered it, and a backlog slot
    (``depth * ACCEPT_BACKLOG_WINDOWS``) until its accept committed (or its delivery failed): sending
    never waits for the warehouse's writes, and at most the backlog's batches are ever sent but not
    accepted, all a crash can make us send again.
    """

    def __init__(self, conn: Any, defn: Any, run_id: str, schema: str, depth: int) -> None:
        self._conn, self._defn, self._run_id, self._schema = conn, defn, run_id, schema
        self._backlog_size = depth * ACCEPT_BACKLOG_WINDOWS
        self._sending = threading.Semaphore(depth)
        self._backlog = threading.Semaphore(self._backlog_size)
        self._done: queue.SimpleQueue[_Finished | str] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.tally: Counter[str] = Counter()
        self.answered = 0
        self.error: BaseException | None = None
        # The first batch Iterable did not accept, its error's cause (masked) for the run's message.
        self.first_failure: str | None = None
        self._thread = threading.Thread(target=self._run, name="snowflake-sync-accept", daemon=True)
        self._thread.start()

    def reserve(self, waiting: Callable[[], None] = lambda: None) -> None:
        """Wait for a backlog slot and a sending slot, calling ``waiting`` every half second meanwhile
        (a batch at the rate limit can take longer than the progress interval); raise if accepting
        failed (the run must not go on)."""
        self._take(self._backlog, waiting)
        self._take(self._sending, waiting)

    def _take(self, slots: threading.Semaphore, waiting: Callable[[], None]) -> None:
        while not slots.acquire(timeout=0.5):
            self._raise_if_failed()
            waiting()
        self._raise_if_failed()

    def finished(self, batch_no: int, identities: list[str], future: Future[BatchReport]) -> None:
        """A delivery ended (a done callback: runs on the task's thread); queue it for accepting."""
        with self._lock:
            self.answered += len(identities)
        self._sending.release()
        self._done.put(_Finished(batch_no, identities, future))

    def rows_answered(self) -> int:
        """Rows of the batches Iterable has answered so far (accepted or not): the run's progress."""
        with self._lock:
            return self.answered

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.tally)

    def close(self, waiting: Callable[[], None] = lambda: None) -> None:
        """Wait until every submitted batch is accepted or failed, stop the thread; raise on failure."""
        self._done.put(_CLOSING)  # no more batches: the last ones are accepted without waiting
        for _ in range(self._backlog_size):
            self._take(self._backlog, waiting)
        self.stop()
        self._raise_if_failed()

    def stop(self) -> None:
        """Let the thread accept what already finished, then end it (safe to call again)."""
        if self._thread.is_alive():
            self._done.put(_STOP)
            self._thread.join()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise RuntimeError("accepting delivered batches in the warehouse failed") from self.error

    def _run(self) -> None:
        closing = False
        while True:
            first = self._done.get()
            if first == _STOP:
                return
            if isinstance(first, str):
                closing = True
                continue
            group, stopping = [first], False
            deadline = time.monotonic() + ACCEPT_EVERY_SECONDS
            while not stopping:
                wait = 0.0 if closing else deadline - time.monotonic()
                try:
                    more = self._done.get(timeout=wait) if wait > 0 else self._done.get_nowait()
                except queue.Empty:
                    break
                if isinstance(more, str):
                    closing, stopping = True, more == _STOP
                else:
                    group.append(more)
            self._accept(group)
            if stopping:
                return

    def _accept(self, group: list[_Finished]) -> None:
        accepted: list[int] = []
        rejected: dict[str, str] = {}
        not_found: set[str] = set()
        failed: dict[int, str] = {}
        sent = rows = 0
        for done in group:
            try:
                report = done.future.result()
            except Exception as exc:
                # Not accepted: its rows stay in the change set for the next run.
                failed[done.batch_no] = error_text(exc)
                with self._lock:
                    self.first_failure = self.first_failure or failed[done.batch_no]
                continue
            rejected |= {done.identities[p]: reason for p, reason in report.rejected.items()}
            not_found |= {done.identities[p] for p in report.not_found}
            accepted.append(done.batch_no)
            sent += report.sent
            rows += len(done.identities)
        try:
            if self.error is None and accepted:
                accept_batch(
                    self._conn, self._defn, self._run_id, accepted,
                    rejected=rejected, not_found=not_found, state_schema=self._schema,
                )  # fmt: skip
            if self.error is None and failed:
                record_failed(self._conn, self._run_id, failed, self._schema)
        except BaseException as exc:  # the flow thread raises it; nothing more is accepted
            self.error = exc
        else:
            with self._lock:
                self.tally.update(rows_sent=sent, rows_done=rows, failed_batches=len(failed))
        finally:
            for _ in group:
                self._backlog.release()


@dataclass(frozen=True)
class Delivered:
    """What ``send_batches`` did: rows Iterable took, batches it did not accept, and the first cause."""

    rows_sent: int = 0
    failed_batches: int = 0
    first_failure: str | None = None
    rows_answered: int = 0

    def counts(self) -> dict[str, int]:
        """The counts of the run's summary."""
        return {"rows_sent": self.rows_sent, "failed_batches": self.failed_batches}


@dataclass(frozen=True)
class _Finished:
    batch_no: int
    identities: list[str]
    future: Future[BatchReport]


def send_batches(
    conn: Any,
    accept_conn: Any,
    defn: SyncDefinition,
    run_id: str,
    schema: str,
    *,
    deliver: DeliverBatch,
    depth: int,
    progress: Callable[[int], object] = lambda done: None,
) -> Delivered:
    """Deliver the planned batches a few at a time; accept finished ones in the background.

    ``conn`` reads the batches; ``accept_conn`` records what Iterable accepted. ``deliver(batch_no,
    items)`` sends one batch; each runs on a worker thread in a copy of the caller's context.
    ``progress(rows_answered)`` is told how far the run got, on this thread, after each batch is
    submitted and every half second while it waits for an answer. Returns what was delivered, with
    the cause of the first batch Iterable did not accept.
    """
    depth = max(1, depth)
    accepter = _Accepter(accept_conn, defn, run_id, schema, depth)

    def report() -> None:
        progress(accepter.rows_answered())

    try:
        with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="sync-batch") as pool:
            for batch in iter_batches(conn, defn, run_id, state_schema=schema):
                accepter.reserve(report)
                context = contextvars.copy_context()
                future = pool.submit(context.run, deliver, batch.batch_no, batch.items)
                future.add_done_callback(partial(accepter.finished, batch.batch_no, batch.identities))
                report()
            accepter.close(report)
    finally:
        accepter.stop()
    # Every answer is in the run's log; the state and the change log take them now, in one transaction.
    merge_answers(accept_conn, defn, run_id, schema)
    counts = accepter.counts()
    report()
    return Delivered(
        counts.get("rows_sent", 0),
        counts.get("failed_batches", 0),
        accepter.first_failure,
        accepter.rows_answered(),
    )
