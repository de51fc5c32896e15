"""Record Iterable's answer per batch in the run's answer log, and close a run with its history row."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from iterable_recipes.sync import change_log, state
from iterable_recipes.sync.answers import merge_answers, record_answers, record_reset
from iterable_recipes.sync.change_log import HELD_BACK
from iterable_recipes.sync.definitions import SyncDefinition
from iterable_recipes.sync.results import LEAVING, RunCounts
from iterable_recipes.sync.sql import utc_now, utc_text


def accept_batch(
    conn: Any,
    defn: SyncDefinition,
    run_id: str,
    batch_no: int | Iterable[int],
    *,
    rejected: Mapping[str, str] | None = None,
    not_found: Iterable[str] = (),
    state_schema: str | None = None,
    now: datetime | None = None,
) -> None:
    """Record Iterable's answer to batch ``batch_no`` (or to several batches): one append to the
    run's answer log, durable at once and costing only its own batch (``sync/answers.py``).

    ``batch_no`` is one batch number or several; for several, ``rejected`` and ``not_found`` are the
    merged outcomes of all of them. Every staged identity of the batches that is not in ``rejected``
    (identity -> reason) or ``not_found`` was accepted: ``merge_answers`` (at the end of the sending,
    ``finish_run``, or the next plan) gives it its new hash and takes it off the rejected and
    not-found lists; rejected keys are kept with their (masked) reason and attempt count, not-found
    keys with when and the hash they had. A crash before this commits re-sends only the batches in
    flight; recording a batch twice is harmless; no batches is a no-op.
    """
    numbers = [int(batch_no)] if isinstance(batch_no, int) else sorted({int(n) for n in batch_no})
    if numbers:
        record_answers(conn, run_id, numbers, rejected or {}, not_found, state_schema, now)


def accept_all(
    conn: Any,
    defn: SyncDefinition,
    run_id: str,
    *,
    state_schema: str | None = None,
    now: datetime | None = None,
) -> None:
    """Mark the whole planned change set as synced without sending it (an operator's "reset without
    re-sending", and a fast way to seed state in tests and benchmarks); applied at once."""
    record_reset(conn, run_id, state_schema, now)
    merge_answers(conn, defn, run_id, state_schema, now)


def finish_run(
    conn: Any,
    defn: SyncDefinition,
    run_id: str,
    *,
    status: str = "succeeded",
    state_schema: str | None = None,
    now: datetime | None = None,
    log_days: float | None = None,
) -> RunCounts:
    """Write the run-history row's outcome (accepted, rejected, not in Iterable), drop the run's tables,
    and, given ``log_days``, delete the sync's change-log rows older than that.

    Outcome counts are read back from the state tables, so they are right even when batches were
    accepted by an earlier attempt of the same run. A dry run keeps its ``dry_run`` status.
    """
    schema = state.state_schema_name(state_schema)
    runs = state.table(schema, state.RUNS)
    merge_answers(conn, defn, run_id, schema, now)
    counts = []
    cur = conn.cursor()
    try:
        for name in (state.SNAPSHOT, state.REJECTED, state.NOT_FOUND):
            cur.execute(
                f"SELECT COUNT(*) FROM {state.table(schema, name)} WHERE SYNC_NAME = %s AND RUN_ID = %s",
                (defn.name, run_id),
            )
            counts.append(int(cur.fetchone()[0]))
        removed = held = 0
        if defn.stages_departures:
            removed, held = _list_outcomes(cur, schema, defn, run_id)
            counts[1] -= held  # held back by consent, not refused by Iterable
        cur.execute(
            f"""UPDATE {runs} SET STATUS = IFF(DRY_RUN, 'dry_run', %s), FINISHED_AT = %s::TIMESTAMP_NTZ,
              ACCEPTED = %s, REJECTED = %s, NOT_IN_ITERABLE = %s
            WHERE RUN_ID = %s AND SYNC_NAME = %s""",
            (status, utc_text(now or utc_now()), *counts, run_id, defn.name),
        )
        cur.execute(
            f"""SELECT STATUS, DRY_RUN, ROWS_IN_MODEL, NEW_ROWS, CHANGED_ROWS, UNCHANGED_ROWS,
              REJECTED_RETRY + NOT_FOUND_RETRY, DUPLICATE_ROWS, NULL_IDENTITIES, TO_SEND
            FROM {runs} WHERE RUN_ID = %s AND SYNC_NAME = %s""",
            (run_id, defn.name),
        )
        row = cur.fetchone()
        if row is None:
            raise LookupError(f"run {run_id} of sync {defn.name} was never planned")
        cur.execute(f"DROP TABLE IF EXISTS {state.stage_table(schema, run_id)}")
        cur.execute(f"DROP TABLE IF EXISTS {state.answers_table(schema, run_id)}")
        cur.execute(f"DROP TABLE IF EXISTS {state.invalid_table(schema, run_id)}")
    finally:
        cur.close()
    if log_days is not None:
        change_log.expire(conn, defn.name, log_days, schema, now)
    st, dry, total, new, changed, unchanged, retried, dups, nulls, to_send = row
    return RunCounts(
        run_id=run_id,
        sync_name=defn.name,
        status=str(st),
        dry_run=bool(dry),
        rows_in_model=int(total),
        new=int(new),
        changed=int(changed),
        unchanged=int(unchanged),
        retried=int(retried),
        duplicates=int(dups),
        null_identities=int(nulls),
        to_send=int(to_send),
        accepted=counts[0],
        rejected=counts[1],
        not_in_iterable=counts[2],
        removed=removed,
        held_back=held,
    )


def _list_outcomes(cur: Any, schema: str, defn: SyncDefinition, run_id: str) -> tuple[int, int]:
    """A run's departures done (staged as leaving, no longer in the snapshot: list members removed, or
    profiles whose synced fields were cleared) and list members held back by consent (kept with
    ``HELD_BACK`` by this run)."""
    stage = state.stage_table(schema, run_id)
    snap, rej = state.table(schema, state.SNAPSHOT), state.table(schema, state.REJECTED)
    # The run's staging table is still there: finish_run drops it only after reading these counts.
    cur.execute(
        f"""SELECT COUNT(*) FROM {stage} G WHERE G.REASON = '{LEAVING}' AND NOT EXISTS (
          SELECT 1 FROM {snap} S WHERE S.SYNC_NAME = %s AND S.IDENTITY = G.IDENTITY)""",
        (defn.name,),
    )
    removed = int(cur.fetchone()[0])
    cur.execute(
        f"SELECT COUNT(*) FROM {rej} WHERE SYNC_NAME = %s AND RUN_ID = %s AND REASON = %s",
        (defn.name, run_id, HELD_BACK),
    )
    return removed, int(cur.fetchone()[0])
