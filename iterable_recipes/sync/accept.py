"""Record Iterable's answer per batch in one transaction, and close a run with its history row."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from iterable_recipes.masking import mask_emails as mask_text
from iterable_recipes.sync import change_log, state
from iterable_recipes.sync.change_log import HELD_BACK
from iterable_recipes.sync.definitions import SyncDefinition
from iterable_recipes.sync.plan import LEAVING
from iterable_recipes.sync.results import RunCounts
from iterable_recipes.sync.sql import utc_now, utc_text

MAX_REASON_CHARS = 1000
# The reason a list member under a consent suppression is kept with: not sent, not a rejection by
# Iterable, tried again by later runs (a lifted suppression lets them join).


def _values(rows: Sequence[tuple[str, ...]]) -> tuple[str, list[str]]:
    """A ``VALUES`` list with placeholders and its flat parameters."""
    width = len(rows[0])
    tuple_sql = "(" + ", ".join(["%s"] * width) + ")"
    return ", ".join([tuple_sql] * len(rows)), [v for row in rows for v in row]


def _batch_filter(batch_nos: Sequence[int] | None, alias: str = "") -> str:
    """``BATCH_NO IN (...)`` for the given batches (integers only), or TRUE for the whole change set."""
    if batch_nos is None:
        return "TRUE"
    return f"{alias}BATCH_NO IN ({', '.join(str(int(n)) for n in batch_nos)})"


def _record(
    conn: Any,
    defn: SyncDefinition,
    run_id: str,
    batch_nos: Sequence[int] | None,
    rejected: Mapping[str, str],
    not_found: Iterable[str],
    state_schema: str | None,
    now: datetime | None,
) -> None:
    schema = state.state_schema_name(state_schema)
    stage = state.stage_table(schema, run_id)
    snap, rej, nf = (state.table(schema, t) for t in (state.SNAPSHOT, state.REJECTED, state.NOT_FOUND))
    at = utc_text(now or utc_now())
    if batch_nos is not None and not batch_nos:
        return
    in_batch, s_in_batch = _batch_filter(batch_nos), _batch_filter(batch_nos, "S.")
    # A key both rejected and not found counts as rejected: the reason says more.
    bad_rows = [(k, mask_text(str(r))[:MAX_REASON_CHARS]) for k, r in rejected.items()]
    missing = sorted(set(not_found) - set(rejected))
    excluded = [k for k, _ in bad_rows] + missing
    excl_sql = f" AND IDENTITY NOT IN ({', '.join(['%s'] * len(excluded))})" if excluded else ""
    accepted = f"SELECT IDENTITY, ROW_HASH FROM {stage} WHERE {in_batch}{excl_sql}"
    # A list member whose removal Iterable accepted leaves the snapshot; everyone else accepted joins it.
    joined = f"{accepted} AND REASON <> '{LEAVING}'"

    cur = conn.cursor()
    try:
        # Delete-then-insert rather than MERGE: fakesnow runs MERGE through a temporary table, which
        # DuckDB refuses inside a transaction that also writes the state database.
        cur.execute("BEGIN")
        # Accepted keys get their new hash, and are no longer rejected nor missing from Iterable.
        for name in (snap, rej, nf):
            cur.execute(
                f"""DELETE FROM {name} WHERE SYNC_NAME = %s
                AND IDENTITY IN (SELECT IDENTITY FROM ({accepted}) A)""",
                (defn.name, *excluded),
            )
        cur.execute(
            f"""INSERT INTO {snap} (SYNC_NAME, IDENTITY, ROW_HASH, ACCEPTED_AT, RUN_ID)
            SELECT %s, A.IDENTITY, A.ROW_HASH, %s::TIMESTAMP_NTZ, %s FROM ({joined}) A""",
            (defn.name, at, run_id, *excluded),
        )
        if bad_rows:
            values, params = _values(bad_rows)
            outcome = f"""SELECT V.VID AS IDENTITY, V.VREASON AS REASON
                FROM (VALUES {values}) AS V (VID, VREASON)
                JOIN {stage} S ON S.IDENTITY = V.VID AND {s_in_batch}"""
            _upsert_outcome(cur, rej, outcome, params, defn.name, at, run_id, "REASON = A.REASON", "A.REASON")
            marks = ", ".join(["%s"] * len(bad_rows))
            cur.execute(
                f"DELETE FROM {nf} WHERE SYNC_NAME = %s AND IDENTITY IN ({marks})",
                (defn.name, *[k for k, _ in bad_rows]),
            )
        if missing:
            marks = ", ".join(["%s"] * len(missing))
            outcome = f"SELECT IDENTITY, ROW_HASH FROM {stage} WHERE {in_batch} AND IDENTITY IN ({marks})"
            _upsert_outcome(
                cur, nf, outcome, missing, defn.name, at, run_id, "ROW_HASH = A.ROW_HASH", "A.ROW_HASH"
            )
            cur.execute(
                f"DELETE FROM {rej} WHERE SYNC_NAME = %s AND IDENTITY IN ({marks})",
                (defn.name, *missing),
            )
        if missing and defn.stages_departures and not defn.is_list:
            # A person to clear whom Iterable does not know has nothing left to clear: forgotten.
            marks = ", ".join(["%s"] * len(missing))
            cur.execute(
                f"""DELETE FROM {snap} WHERE SYNC_NAME = %s AND IDENTITY IN ({marks})
                AND IDENTITY IN (SELECT IDENTITY FROM {stage} WHERE REASON = '{LEAVING}' AND {in_batch})""",
                (defn.name, *missing),
            )
        if batch_nos is not None:  # what was sent, not a reset without sending
            answered = [(k, change_log.status_of(r), r) for k, r in bad_rows]
            answered += [(k, "not_in_iterable", "") for k in missing]
            sql, params = change_log.log_answered_sql(schema, run_id, in_batch, answered)
            cur.execute(sql, (defn.name, run_id, at, *params))
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    finally:
        cur.close()


def _upsert_outcome(
    cur: Any,
    target: str,
    outcome: str,
    params: Sequence[str],
    sync: str,
    at: str,
    run_id: str,
    set_detail: str,
    detail: str,
) -> None:
    """Count one more attempt for keys already listed in ``target``, list the others with attempt 1."""
    last = "LAST_AT" if target.endswith(state.REJECTED) else "SEEN_AT"
    detail_col = set_detail.split(" = ")[0]
    cur.execute(
        f"""UPDATE {target} SET {set_detail}, ATTEMPTS = ATTEMPTS + 1, {last} = %s::TIMESTAMP_NTZ, RUN_ID = %s
        FROM ({outcome}) A WHERE {target}.SYNC_NAME = %s AND {target}.IDENTITY = A.IDENTITY""",
        (at, run_id, *params, sync),
    )
    cur.execute(
        f"""INSERT INTO {target} (SYNC_NAME, IDENTITY, {detail_col}, ATTEMPTS, FIRST_AT, {last}, RUN_ID)
        SELECT %s, A.IDENTITY, {detail}, 1, %s::TIMESTAMP_NTZ, %s::TIMESTAMP_NTZ, %s FROM ({outcome}) A
        WHERE NOT EXISTS (SELECT 1 FROM {target} O WHERE O.SYNC_NAME = %s AND O.IDENTITY = A.IDENTITY)""",
        (sync, at, at, run_id, *params, sync),
    )


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
    """Record Iterable's answer to batch ``batch_no`` (or to several batches) in one transaction.

    ``batch_no`` is one batch number or several; for several, ``rejected`` and ``not_found`` are the
    merged outcomes of all of them, and they are accepted together (one transaction costs about the
    same for one batch as for many, so a caller with several finished batches should pass them all).
    Every staged identity of the batches that is not in ``rejected`` (identity -> reason) or
    ``not_found`` has its hash merged into the snapshot and leaves the rejected/not-found lists;
    rejected keys are recorded with their (masked) reason and attempt count; not-found keys with when
    and the hash they had. Keys not in those batches are ignored. A crash before this commits re-sends
    only the batches in flight; calling it twice for a batch is harmless; no batches is a no-op.
    """
    numbers = [int(batch_no)] if isinstance(batch_no, int) else sorted({int(n) for n in batch_no})
    _record(conn, defn, run_id, numbers, rejected or {}, not_found, state_schema, now)


def accept_all(
    conn: Any,
    defn: SyncDefinition,
    run_id: str,
    *,
    state_schema: str | None = None,
    now: datetime | None = None,
) -> None:
    """Mark the whole planned change set as synced without sending it (an operator's "reset without
    re-sending", and a fast way to seed state in tests and benchmarks)."""
    _record(conn, defn, run_id, None, {}, (), state_schema, now)


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
