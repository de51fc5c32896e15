"""Deliver a planned sync run's batches to Iterable and accept each one in the warehouse once Iterable did.

Batches are read from the staging table, sent a few at a time (``sync_batches_in_flight``), and every
batch that finished is accepted in the background on a connection of its own, several per transaction:
reading and sending never wait for the warehouse's writes, and at most ``sync_batches_in_flight`` batches
are ever sent but not accepted, all a crash can make us send again.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Any

from prefect.futures import PrefectFuture
from prefect.utilities.annotations import quote

from iterable_recipes.settings import get_settings
from iterable_recipes.sync import (
    accept_batch,
    ensure_state,
    finish_run,
    iter_batches,
    plan_changes,
    sample_changes,
    validate_against_warehouse,
)
from iterable_recipes.sync.definitions import SyncDefinition
from iterable_recipes.sync.results import ChangeSetSummary
from tasks.reporting import Progress
from tasks.warehouse import BatchReport, deliver_batch, warehouse_connection


def plan_run(conn: Any, defn: SyncDefinition, run_id: str, schema: str, dry_run: bool) -> ChangeSetSummary:
    """Check the definition against the warehouse and materialise this run's change set once."""
    ensure_state(conn, schema)
    validate_against_warehouse(defn, conn)
    return plan_changes(conn, defn, run_id, state_schema=schema, dry_run=dry_run)


class _Accepter:
    """Accepts finished batches on a connection and a thread of its own, several per transaction.

    A batch holds a slot of the window from before it is submitted until its accept commits (or its
    delivery fails), so at most ``depth`` batches are ever sent but not accepted: a crash re-sends
    at most those. Reading and sending never wait for the warehouse's writes, and every batch that
    finished while the previous transaction ran is accepted by the next one.
    """

    def __init__(self, conn: Any, defn: Any, run_id: str, schema: str, depth: int) -> None:
        self._conn, self._defn, self._run_id, self._schema = conn, defn, run_id, schema
        self._depth = depth
        self._window = threading.Semaphore(depth)
        self._done: queue.SimpleQueue[_Finished | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.tally: Counter[str] = Counter()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="snowflake-sync-accept", daemon=True)
        self._thread.start()

    def reserve(self) -> None:
        """Wait for a slot of the window; raise if accepting failed (the run must not go on)."""
        while not self._window.acquire(timeout=0.5):
            self._raise_if_failed()
        self._raise_if_failed()

    def finished(self, batch_no: int, identities: list[str], future: PrefectFuture[BatchReport]) -> None:
        """A delivery ended (a done callback: runs on the task's thread); queue it for accepting."""
        self._done.put(_Finished(batch_no, identities, future))

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.tally)

    def close(self) -> None:
        """Wait until every submitted batch is accepted or failed, stop the thread; raise on failure."""
        for _ in range(self._depth):
            self.reserve()
        self.stop()
        self._raise_if_failed()

    def stop(self) -> None:
        """Let the thread accept what already finished, then end it (safe to call again)."""
        if self._thread.is_alive():
            self._done.put(None)
            self._thread.join()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise RuntimeError("accepting delivered batches in the warehouse failed") from self.error

    def _run(self) -> None:
        while (first := self._done.get()) is not None:
            group, stopping = [first], False
            while not self._done.empty():
                more = self._done.get()
                if more is None:
                    stopping = True
                    break
                group.append(more)
            self._accept(group)
            if stopping:
                return

    def _accept(self, group: list[_Finished]) -> None:
        accepted: list[int] = []
        rejected: dict[str, str] = {}
        not_found: set[str] = set()
        sent = rows = failed = 0
        for done in group:
            try:
                report = done.future.result()
            except Exception:
                # Not accepted: its rows stay in the change set for the next run.
                failed += 1
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
        except BaseException as exc:  # the flow thread raises it; nothing more is accepted
            self.error = exc
        else:
            with self._lock:
                self.tally.update(rows_sent=sent, rows_done=rows, failed_batches=failed)
        finally:
            for _ in group:
                self._window.release()


@dataclass(frozen=True)
class _Finished:
    batch_no: int
    identities: list[str]
    future: PrefectFuture[BatchReport]


def send_batches(conn: Any, defn: Any, run_id: str, schema: str, total: int) -> dict[str, int]:
    """Deliver the planned batches a few at a time; accept finished ones in the background.

    ``conn`` reads the batches; a second connection records what Iterable accepted.
    """
    depth = max(1, get_settings().sync_batches_in_flight)
    progress = Progress(f"Rows of {defn.name} sent to Iterable")
    quoted = quote(defn)
    with warehouse_connection() as accept_conn:
        accepter = _Accepter(accept_conn, defn, run_id, schema, depth)
        try:
            for batch in iter_batches(conn, defn, run_id, state_schema=schema):
                accepter.reserve()
                # quote: Prefect neither walks the items nor keeps them after the task ends.
                future = deliver_batch.submit(quoted, batch.batch_no, quote(batch.items))  # type: ignore[call-overload]
                future.add_done_callback(partial(accepter.finished, batch.batch_no, batch.identities))
                progress.update(accepter.counts().get("rows_done", 0), total)
            accepter.close()
        finally:
            accepter.stop()
    counts = accepter.counts()
    progress.update(counts.get("rows_done", 0), total)
    return {"rows_sent": counts.get("rows_sent", 0), "failed_batches": counts.get("failed_batches", 0)}


__all__ = ["finish_run", "plan_run", "sample_changes", "send_batches"]
