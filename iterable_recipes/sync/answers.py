"""The run's answer log: what Iterable said of each batch, appended at once, merged into the state later.

Recording an answer is one small INSERT into the run's own ``SYNC_ANSWERS_<run>`` table: a row per
answered batch, and one per row Iterable did not take (rejected, held back, not in Iterable) or per
batch it refused whole (failed). It costs only its own batch, whatever the size of the snapshot, and
is durable at once, so sending never waits for the state's big tables. ``merge_answers`` applies the
log to the snapshot, rejected and not-in-Iterable tables and writes the change log, in one transaction
that also empties the log: at the end of the run's sending, by ``finish_run``, and before any plan of
the sync (a retried run resuming, or a run after one that stopped half-way), so the next plan never
sends again what Iterable already took.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from iterable_recipes.masking import mask_emails
from iterable_recipes.sync import state
from iterable_recipes.sync.change_log import status_of
from iterable_recipes.sync.definitions import SyncDefinition
from iterable_recipes.sync.results import LEAVING
from iterable_recipes.sync.sql import literal, utc_now, utc_text

MAX_REASON_CHARS = 1000
ANSWERED = "answered"  # a batch Iterable answered; its rows not named otherwise were accepted
RESET = "reset"  # a batch marked synced without sending (``accept_all``): applied, never logged
FAILED = "failed"  # a batch Iterable did not accept as a whole; its rows stay in the change set
NOT_IN_ITERABLE = "not_in_iterable"
REFUSED = ("rejected", "held")  # a row Iterable refused, or one held back for consent (change-log words)
DDL = """(BATCH_NO INTEGER, IDENTITY VARCHAR, STATUS VARCHAR NOT NULL, DETAIL VARCHAR,
    ANSWERED_AT TIMESTAMP_NTZ NOT NULL)"""


def create_log(conn: Any, run_id: str, state_schema: str | None = None) -> None:
    """Create the run's answer log if missing (planning does, before anything is sent)."""
    cur = conn.cursor()
    try:
        cur.execute(f"CREATE TABLE IF NOT EXISTS {state.answers_table(state_schema, run_id)} {DDL}")
    finally:
        cur.close()


def record_answers(
    conn: Any,
    run_id: str,
    batch_nos: Sequence[int],
    rejected: Mapping[str, str],
    not_found: Iterable[str],
    state_schema: str | None = None,
    now: datetime | None = None,
) -> None:
    """Append Iterable's answer to ``batch_nos``: every staged row of them not in ``rejected``
    (identity -> reason) or ``not_found`` was accepted. A key both rejected and not found counts as
    rejected: the reason says more."""
    at = utc_text(now or utc_now())
    rows: list[tuple[Any, ...]] = [(int(n), None, ANSWERED, None, at) for n in batch_nos]
    for key, reason in rejected.items():
        rows.append((None, key, status_of(reason), mask_emails(str(reason))[:MAX_REASON_CHARS], at))
    rows += [(None, key, NOT_IN_ITERABLE, "", at) for key in sorted(set(not_found) - set(rejected))]
    _append(conn, run_id, rows, state_schema)


def record_failed(
    conn: Any,
    run_id: str,
    failed: Mapping[int, str],
    state_schema: str | None = None,
    now: datetime | None = None,
) -> None:
    """Append the batches Iterable did not accept (batch number -> the error, masked)."""
    at = utc_text(now or utc_now())
    rows = [
        (int(n), None, FAILED, mask_emails(error)[:MAX_REASON_CHARS], at)
        for n, error in sorted(failed.items())
    ]
    _append(conn, run_id, rows, state_schema)


def record_reset(
    conn: Any, run_id: str, state_schema: str | None = None, now: datetime | None = None
) -> None:
    """Mark every batch of the run's change set as accepted without sending (not logged)."""
    schema = state.state_schema_name(state_schema)
    log, stage = state.answers_table(schema, run_id), state.stage_table(schema, run_id)
    at = literal(utc_text(now or utc_now()))
    cur = conn.cursor()
    try:
        cur.execute(
            f"""INSERT INTO {log} (BATCH_NO, IDENTITY, STATUS, DETAIL, ANSWERED_AT)
            SELECT DISTINCT BATCH_NO, NULL, '{RESET}', NULL, {at}::TIMESTAMP_NTZ FROM {stage}"""
        )
    finally:
        cur.close()


def _append(conn: Any, run_id: str, rows: Sequence[tuple[Any, ...]], state_schema: str | None) -> None:
    if not rows:
        return
    values = ", ".join(["(%s, %s, %s, %s, %s::TIMESTAMP_NTZ)"] * len(rows))
    cur = conn.cursor()
    try:
        cur.execute(
            f"""INSERT INTO {state.answers_table(state_schema, run_id)}
            (BATCH_NO, IDENTITY, STATUS, DETAIL, ANSWERED_AT) VALUES {values}""",
            [value for row in rows for value in row],
        )
    finally:
        cur.close()


def merge_answers(
    conn: Any,
    defn: SyncDefinition,
    run_id: str,
    state_schema: str | None = None,
    now: datetime | None = None,
    *,
    log_exists: bool = False,
) -> None:
    """Apply the run's answer log to the sync's state and the change log, and empty it, in one
    transaction (a no-op for an empty log).

    Accepted keys get their new hash and leave the rejected and not-in-Iterable lists (a list member
    whose removal was accepted, or a person whose fields were cleared, leaves the snapshot); rejected
    keys are kept with their masked reason and one more attempt; not-found keys with when and the
    hash they had. Applying it twice is harmless: the log is emptied in the same transaction. A run
    without a log (never planned) has nothing to merge; ``log_exists`` says the caller already looked.
    """
    schema = state.state_schema_name(state_schema)
    log, stage = state.answers_table(schema, run_id), state.stage_table(schema, run_id)
    snap, rej, nf = (state.table(schema, t) for t in (state.SNAPSHOT, state.REJECTED, state.NOT_FOUND))
    change_log = state.table(schema, state.CHANGE_LOG)
    sync, run, at = (
        literal(defn.name),
        literal(run_id),
        f"{literal(utc_text(now or utc_now()))}::TIMESTAMP_NTZ",
    )
    refused = ", ".join(literal(status) for status in REFUSED)
    done = f"SELECT BATCH_NO FROM {log} WHERE STATUS IN ('{ANSWERED}', '{RESET}')"
    named = f"SELECT IDENTITY FROM {log} WHERE IDENTITY IS NOT NULL"
    accepted = f"""SELECT IDENTITY, ROW_HASH, REASON FROM {stage}
        WHERE BATCH_NO IN ({done}) AND IDENTITY NOT IN ({named})"""
    bad = f"SELECT IDENTITY, DETAIL AS REASON FROM {log} WHERE STATUS IN ({refused})"
    missing = f"""SELECT S.IDENTITY, S.ROW_HASH, S.REASON FROM {stage} S
        JOIN {log} L ON L.IDENTITY = S.IDENTITY AND L.STATUS = '{NOT_IN_ITERABLE}'"""
    cur = conn.cursor()
    try:
        if not log_exists and _bare(log) not in _existing_tables(cur, schema, [_bare(log)]):
            return  # a run planned before answer logs existed, or never planned
        cur.execute(f"SELECT COUNT(*) FROM {log}")
        if not int(cur.fetchone()[0]):
            return
        # Delete-then-insert rather than MERGE: fakesnow runs MERGE through a temporary table, which
        # DuckDB refuses inside a transaction that also writes the state database.
        cur.execute("BEGIN")
        try:
            for name in (snap, rej, nf):
                cur.execute(
                    f"""DELETE FROM {name} WHERE SYNC_NAME = {sync}
                    AND IDENTITY IN (SELECT IDENTITY FROM ({accepted}) A)"""
                )
            cur.execute(
                f"""INSERT INTO {snap} (SYNC_NAME, IDENTITY, ROW_HASH, ACCEPTED_AT, RUN_ID)
                SELECT {sync}, A.IDENTITY, A.ROW_HASH, {at}, {run} FROM ({accepted}) A
                WHERE A.REASON <> '{LEAVING}'"""
            )
            _upsert_outcome(cur, rej, bad, sync, at, run, "REASON = A.REASON", "A.REASON")
            cur.execute(
                f"DELETE FROM {nf} WHERE SYNC_NAME = {sync} AND IDENTITY IN (SELECT IDENTITY FROM ({bad}) B)"
            )
            _upsert_outcome(cur, nf, missing, sync, at, run, "ROW_HASH = A.ROW_HASH", "A.ROW_HASH")
            cur.execute(
                f"""DELETE FROM {rej} WHERE SYNC_NAME = {sync}
                AND IDENTITY IN (SELECT IDENTITY FROM ({missing}) M)"""
            )
            if defn.stages_departures and not defn.is_list:
                # A person to clear whom Iterable does not know has nothing left to clear: forgotten.
                cur.execute(
                    f"""DELETE FROM {snap} WHERE SYNC_NAME = {sync}
                    AND IDENTITY IN (SELECT IDENTITY FROM ({missing}) M WHERE M.REASON = '{LEAVING}')"""
                )
            _log_changes(cur, change_log, log, stage, sync, run, at)
            cur.execute(f"DELETE FROM {log}")
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
    finally:
        cur.close()


def _log_changes(cur: Any, change_log: str, log: str, stage: str, sync: str, run: str, at: str) -> None:
    """One change-log row per staged row of each answered batch (its status, accepted unless named),
    and per row of each batch Iterable refused whole."""
    columns = "SYNC_NAME, RUN_ID, IDENTITY_HASH, OPERATION, STATUS, ERROR, LOGGED_AT"
    cur.execute(
        f"""INSERT INTO {change_log} ({columns})
        SELECT {sync}, {run}, SHA2(S.IDENTITY, 256), S.REASON, COALESCE(L.STATUS, 'accepted'), L.DETAIL, {at}
        FROM {stage} S LEFT JOIN {log} L ON L.IDENTITY = S.IDENTITY
        WHERE S.BATCH_NO IN (SELECT BATCH_NO FROM {log} WHERE STATUS = '{ANSWERED}')"""
    )
    cur.execute(
        f"""INSERT INTO {change_log} ({columns})
        SELECT {sync}, {run}, SHA2(S.IDENTITY, 256), S.REASON, '{FAILED}', F.DETAIL, {at}
        FROM {stage} S JOIN {log} F ON F.BATCH_NO = S.BATCH_NO AND F.STATUS = '{FAILED}'"""
    )


def _upsert_outcome(
    cur: Any, target: str, outcome: str, sync: str, at: str, run: str, set_detail: str, detail: str
) -> None:
    """Count one more attempt for keys already listed in ``target``, list the others with attempt 1."""
    last = "LAST_AT" if target.endswith(state.REJECTED) else "SEEN_AT"
    detail_col = set_detail.split(" = ")[0]
    cur.execute(
        f"""UPDATE {target} SET {set_detail}, ATTEMPTS = ATTEMPTS + 1, {last} = {at}, RUN_ID = {run}
        FROM ({outcome}) A WHERE {target}.SYNC_NAME = {sync} AND {target}.IDENTITY = A.IDENTITY"""
    )
    cur.execute(
        f"""INSERT INTO {target} (SYNC_NAME, IDENTITY, {detail_col}, ATTEMPTS, FIRST_AT, {last}, RUN_ID)
        SELECT {sync}, A.IDENTITY, {detail}, 1, {at}, {at}, {run} FROM ({outcome}) A
        WHERE NOT EXISTS (SELECT 1 FROM {target} O WHERE O.SYNC_NAME = {sync} AND O.IDENTITY = A.IDENTITY)"""
    )


def merge_pending(conn: Any, defn: SyncDefinition, run_id: str, state_schema: str | None = None) -> None:
    """Before a plan of ``run_id``: merge the answer log of this run (a retry resuming) and of every
    other run of the sync that never finished (one that stopped half-way), so nothing Iterable took
    is staged again."""
    schema = state.state_schema_name(state_schema)
    runs = state.table(schema, state.RUNS)
    cur = conn.cursor()
    try:
        cur.execute(
            f"""SELECT RUN_ID FROM {runs} WHERE SYNC_NAME = %s AND FINISHED_AT IS NULL
            AND NOT COALESCE(DRY_RUN, FALSE)""",
            (defn.name,),
        )
        unfinished = sorted({str(row[0]) for row in cur.fetchall()} | {run_id})
        tables = {
            run: (state.answers_table(schema, run), state.stage_table(schema, run)) for run in unfinished
        }
        present = _existing_tables(cur, schema, [_bare(name) for pair in tables.values() for name in pair])
    finally:
        cur.close()
    for run, (log, stage) in tables.items():
        if _bare(log) in present and _bare(stage) in present:
            merge_answers(conn, defn, run, schema, log_exists=True)


def _bare(qualified: str) -> str:
    return qualified.rsplit(".", 1)[-1]


def _existing_tables(cur: Any, schema: str, names: Iterable[str]) -> set[str]:
    """Which of ``names`` (bare table names) exist in the state schema."""
    wanted = sorted(set(names))
    database, _, name = schema.rpartition(".")
    catalog = f"{database}.INFORMATION_SCHEMA" if database else "INFORMATION_SCHEMA"
    cur.execute(
        f"""SELECT TABLE_NAME FROM {catalog}.TABLES WHERE TABLE_SCHEMA = %s
        AND TABLE_NAME IN ({", ".join(["%s"] * len(wanted))})""",
        (name, *wanted),
    )
    return {str(row[0]).upper() for row in cur.fetchall()}
