"""Plan a run: the diff in SQL, materialised once into the run's staging table, plus its counts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from iterable_recipes.masking import mask_identity
from iterable_recipes.sync import state
from iterable_recipes.sync.answers import create_log, merge_pending
from iterable_recipes.sync.definitions import MAX_BATCH_SIZE, SyncDefinition
from iterable_recipes.sync.invalid import keep_invalid
from iterable_recipes.sync.rehash import migrate_hashes
from iterable_recipes.sync.results import LEAVING, REASONS, RESYNC, ChangeSetSummary
from iterable_recipes.sync.resync import epoch_start
from iterable_recipes.sync.sql import (
    identity_expr,
    literal,
    row_hash_expr,
    source_subquery,
    utc_now,
    utc_text,
    value_columns,
)
from iterable_recipes.sync.validate import describe_source, validate_against_warehouse


def _scalar_row(cur: Any, sql: str, params: tuple[Any, ...] | None = None) -> tuple[Any, ...]:
    cur.execute(sql, params) if params is not None else cur.execute(sql)
    row = cur.fetchone()
    return tuple(row) if row else ()


def _int(value: Any) -> int:
    # fakesnow returns COUNT_IF and SUM as Decimal, Snowflake as int; None for an empty SUM.
    return int(value or 0)


def plan_changes(
    conn: Any,
    defn: SyncDefinition,
    run_id: str,
    *,
    state_schema: str | None = None,
    batch_size: int | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
    resync_since: datetime | None = None,
    source_types: Mapping[str, str] | None = None,
) -> ChangeSetSummary:
    """Diff the model against the sync's state inside the warehouse and stage the change set once.

    Two passes over the model: the first groups it by identity only (row counts: duplicates, NULL and
    blank identities); the second hashes each row of a unique identity, joins it to the state and
    materialises only the rows to send. Each staged row's identity, hash, reason, batch number and
    mapped values come from that one evaluation, so what is sent is exactly what the accepted hash
    covers and batches are read back by batch number without evaluating the model again. Stored hashes
    of an older hash version are migrated first (``sync/rehash.py``, also on a dry run: it changes what
    the state says in no way, and a preview against old hashes would show every row changed).

    The change set is: new identities, changed rows (hash differs from the accepted one), every
    previously rejected identity, and not-in-Iterable identities whose row changed or whose retry
    interval (``not_in_iterable_retry_hours``) is over. NULL/blank and duplicate identities are counted
    and left out (a bounded list of them is kept in the run's invalid table, ``sync/invalid.py``).
    Identities that left the model leave the state (not on a dry run, which touches no state but writes
    its run-history row and migrates old hashes, nor on a run its ``on_invalid_rows: fail`` refuses).
    Re-planning the same ``run_id`` replaces its staging table.

    ``resync_since`` (a full resync's epoch start, ``sync/resync.py``) stages every unchanged row too
    whose snapshot entry was accepted before it, and no list member leaves: a resync only sends again.
    ``source_types`` (the source's column types, as ``validate_against_warehouse`` returns them) saves
    describing the source again.
    """
    size = batch_size or defn.batch_size
    if not 1 <= size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be 1..{MAX_BATCH_SIZE}")
    now = now or utc_now()
    cutoff = now - timedelta(hours=defn.not_in_iterable_retry_hours)
    schema = state.state_schema_name(state_schema)
    # What Iterable already took, from this run's earlier attempt or a run that stopped half-way,
    # reaches the state before the diff, so it is not staged again.
    merge_pending(conn, defn, run_id, schema)
    work, stage = state.work_table(schema, run_id), state.stage_table(schema, run_id)
    snap, rej, nf = (state.table(schema, t) for t in (state.SNAPSHOT, state.REJECTED, state.NOT_FOUND))
    sync, due = literal(defn.name), f"{literal(utc_text(cutoff))}::TIMESTAMP_NTZ"

    types = source_types if source_types is not None else describe_source(conn, defn)
    migrate_hashes(conn, defn, run_id, types, state_schema=schema, now=now)
    cur = conn.cursor()
    try:
        # Pass 1: one row per identity with its row count, no values (carrying them through the GROUP
        # BY cost more than the second pass). NULL_ROWS tells a NULL identity from a blank one in the
        # run's report; both have ID NULL. GROUP BY 1: a model column named ID would win over the alias.
        column = f"M.{defn.identity.column}"
        cur.execute(
            f"""CREATE OR REPLACE TABLE {work} AS
            SELECT {identity_expr(defn)} AS ID, COUNT(*) AS N, COUNT(*) - COUNT({column}) AS NULL_ROWS
            FROM {source_subquery(defn)}
            GROUP BY 1"""
        )
        # The counts of the first pass, before the second: they say which of its joins and filters
        # can be left out (each costs a pass over the model's rows), and which state tables hold
        # anything of this sync at all.
        total, nulls, dup_rows, dup_ids, valid, rejected_held, not_found_held = (
            _int(v)
            for v in _scalar_row(
                cur,
                f"""SELECT SUM(N), SUM(IFF(ID IS NULL, N, 0)), SUM(IFF(ID IS NOT NULL AND N > 1, N, 0)),
                  COUNT_IF(ID IS NOT NULL AND N > 1), COUNT_IF(ID IS NOT NULL AND N = 1),
                  (SELECT COUNT(*) FROM {rej} WHERE SYNC_NAME = {sync}),
                  (SELECT COUNT(*) FROM {nf} WHERE SYNC_NAME = {sync})
                FROM {work}""",
            )
        )
        if nulls + dup_rows:
            keep_invalid(cur, work, state.invalid_table(schema, run_id))
        picked = "".join(f", M.{column} AS {name}" for column, name in value_columns(defn))
        names = "".join(f", {name}" for _, name in value_columns(defn))
        # An identity the first pass saw once (or not at all) but this one sees twice, the model having
        # changed in between, is left out rather than sent twice; the next run counts it a duplicate.
        changes = (
            "SELECT ID, H, REASON" + names + " FROM C WHERE REASON IS NOT NULL"
            " QUALIFY COUNT(*) OVER (PARTITION BY ID) = 1"
        )
        resync_case, accepted_at = "", ""
        if resync_since is not None:
            resync_case = (
                f"WHEN S.ACCEPTED_AT < {literal(utc_text(resync_since))}::TIMESTAMP_NTZ THEN '{RESYNC}'"
            )
            accepted_at = ", ACCEPTED_AT"
        order = "ID"
        if defn.stages_departures and resync_since is None:
            # Identities in the snapshot (Iterable accepted them) that left the model: a list member
            # leaves the list, a profile has its synced fields cleared (no values: NULL each). They stay
            # in the snapshot until Iterable accepts that. Staged after the others, so batches hold one
            # kind of change but for one.
            no_values = "".join(f", NULL AS {name}" for _, name in value_columns(defn))
            changes += f"""
              UNION ALL
              SELECT S.IDENTITY, S.ROW_HASH, '{LEAVING}'{no_values} FROM {snap} S WHERE S.SYNC_NAME = {sync}
                AND NOT EXISTS (SELECT 1 FROM {work} W WHERE W.ID = S.IDENTITY)"""
            order = f"IFF(REASON = '{LEAVING}', 1, 0), ID"
        # Pass 2. The rejected and not-in-Iterable lists are joined only when they hold anything of the
        # sync, and duplicates left out only when there are any. Duplicates are few: leaving them out
        # (NOT EXISTS) costs less than joining every identity's count. A NULL identity gets no reason
        # rather than a WHERE: DuckDB pushes such a filter below the projection and computes the
        # identity once more for every row (measured: a tenth of the statement's CPU).
        cases, joins = [], []
        if rejected_held:
            cases.append("WHEN R.IDENTITY IS NOT NULL THEN 'rejected_retry'")
            joins.append(
                f"LEFT JOIN (SELECT IDENTITY FROM {rej} WHERE SYNC_NAME = {sync}) R ON R.IDENTITY = V.ID"
            )
        if not_found_held:
            cases += [
                "WHEN F.IDENTITY IS NOT NULL AND F.ROW_HASH <> V.H THEN 'changed'",
                f"WHEN F.IDENTITY IS NOT NULL AND F.SEEN_AT <= {due} THEN 'not_found_retry'",
                "WHEN F.IDENTITY IS NOT NULL THEN NULL",
            ]
            joins.append(
                f"""LEFT JOIN (SELECT IDENTITY, ROW_HASH, SEEN_AT FROM {nf} WHERE SYNC_NAME = {sync}) F
                ON F.IDENTITY = V.ID"""
            )
        unique = f"WHERE NOT EXISTS (SELECT 1 FROM {work} W WHERE W.ID = V.ID AND W.N > 1)" if dup_ids else ""
        cur.execute(
            f"""CREATE OR REPLACE TABLE {stage} AS
            WITH C AS (
              SELECT V.ID, V.H{names},
                CASE
                  WHEN V.ID IS NULL THEN NULL
                  {" ".join(cases)}
                  WHEN S.IDENTITY IS NULL THEN 'new'
                  WHEN S.ROW_HASH <> V.H THEN 'changed'
                  {resync_case}
                END AS REASON
              FROM (SELECT {identity_expr(defn)} AS ID, {row_hash_expr(defn, types)} AS H{picked}
                FROM {source_subquery(defn)}) V
              LEFT JOIN (SELECT IDENTITY, ROW_HASH{accepted_at} FROM {snap} WHERE SYNC_NAME = {sync}) S
                ON S.IDENTITY = V.ID
              {" ".join(joins)}
              {unique}
            )
            SELECT ID AS IDENTITY, H AS ROW_HASH, REASON,
              FLOOR((ROW_NUMBER() OVER (ORDER BY {order}) - 1) / {int(size)})::INTEGER AS BATCH_NO{names}
            FROM ({changes}) CH
            ORDER BY BATCH_NO, IDENTITY"""
        )
        # Not-in-Iterable identities still waiting: those within their retry interval, less the ones
        # staged because their row changed (the work table holds no hashes to compare).
        waiting = 0
        if not_found_held:
            waiting = _int(
                _scalar_row(
                    cur,
                    f"""SELECT (SELECT COUNT(*) FROM {work} W
                      JOIN {nf} F ON F.IDENTITY = W.ID AND F.SYNC_NAME = {sync}
                    WHERE W.N = 1 AND F.SEEN_AT > {due}
                      AND NOT EXISTS (SELECT 1 FROM {rej} R WHERE R.SYNC_NAME = {sync} AND R.IDENTITY = W.ID))
                  - (SELECT COUNT(*) FROM {stage} G JOIN {nf} F ON F.IDENTITY = G.IDENTITY
                    AND F.SYNC_NAME = {sync} WHERE G.REASON = 'changed' AND F.SEEN_AT > {due})""",
                )[0]
            )
        cur.execute(f"SELECT REASON, COUNT(*), MAX(BATCH_NO) FROM {stage} GROUP BY REASON")
        by_reason = {reason: 0 for reason in REASONS}
        batches = 0
        for reason, count, last_batch in cur.fetchall():
            by_reason[reason] = _int(count)
            batches = max(batches, _int(last_batch) + 1)
        # A run refused for its invalid rows sends nothing, so it forgets nobody either: a model whose
        # identity column broke would otherwise empty the snapshot and the fixed model resend every row.
        refused = defn.on_invalid_rows == "fail" and nulls + dup_rows > 0
        # Departures leave the snapshot once Iterable accepted their removal or clearing (a resync
        # stages none: the next plain run does).
        kept = () if defn.stages_departures else (snap,)
        # A state table holding nothing of the sync has nothing to forget (skipped: each costs a pass
        # over the work table).
        forget = kept + tuple(t for t, held in ((rej, rejected_held), (nf, not_found_held)) if held)
        removed = 0 if dry_run or refused else _forget_departed(cur, work, forget, sync)
        cur.execute(f"DROP TABLE IF EXISTS {work}")
        to_send = sum(by_reason.values())
        summary = ChangeSetSummary(
            run_id=run_id,
            sync_name=defn.name,
            dry_run=dry_run,
            rows_in_model=total,
            new=by_reason["new"],
            changed=by_reason["changed"],
            unchanged=valid - (to_send - by_reason[LEAVING]) - waiting,
            rejected_retry=by_reason["rejected_retry"],
            not_found_retry=by_reason["not_found_retry"],
            not_found_waiting=waiting,
            duplicate_rows=dup_rows,
            duplicate_identities=dup_ids,
            null_identities=nulls,
            removed_from_state=removed,
            to_send=to_send,
            batches=batches,
            leaving=by_reason[LEAVING],
            resent=by_reason[RESYNC],
            clears=defn.stages_departures and not defn.is_list,
        )
        _record_plan(cur, schema, defn, summary, now)
    finally:
        cur.close()
    create_log(conn, run_id, schema)
    return summary


def _forget_departed(cur: Any, work: str, tables: tuple[str, ...], sync: str) -> int:
    """Delete state entries whose identity is no longer in the model at all; returns how many."""
    removed = 0
    for name in tables:
        cur.execute(
            f"""DELETE FROM {name} WHERE SYNC_NAME = {sync}
            AND NOT EXISTS (SELECT 1 FROM {work} W WHERE W.ID = {name}.IDENTITY)"""
        )
        if name.endswith(state.SNAPSHOT):
            removed = max(cur.rowcount or 0, 0)
    return removed


def _record_plan(cur: Any, schema: str, defn: SyncDefinition, s: ChangeSetSummary, now: datetime) -> None:
    """Write (or rewrite, on a re-plan) the run-history row with the planned counts."""
    runs = state.table(schema, state.RUNS)
    cur.execute(f"DELETE FROM {runs} WHERE RUN_ID = %s", (s.run_id,))
    cur.execute(
        f"""INSERT INTO {runs} (RUN_ID, SYNC_NAME, STATUS, DRY_RUN, PLANNED_AT, MAPPING, ROWS_IN_MODEL,
          NEW_ROWS, CHANGED_ROWS, UNCHANGED_ROWS, REJECTED_RETRY, NOT_FOUND_RETRY, NOT_FOUND_WAITING,
          DUPLICATE_ROWS, DUPLICATE_IDENTITIES, NULL_IDENTITIES, REMOVED_FROM_STATE, TO_SEND, BATCHES,
          ACCEPTED, REJECTED, NOT_IN_ITERABLE)
        VALUES (%s, %s, %s, %s, %s::TIMESTAMP_NTZ, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
          0, 0, 0)""",
        (
            s.run_id,
            s.sync_name,
            "dry_run" if s.dry_run else "planned",
            s.dry_run,
            utc_text(now),
            defn.mapping_fingerprint,
            s.rows_in_model,
            s.new,
            s.changed,
            s.unchanged,
            s.rejected_retry,
            s.not_found_retry,
            s.not_found_waiting,
            s.duplicate_rows,
            s.duplicate_identities,
            s.null_identities,
            s.removed_from_state,
            s.to_send,
            s.batches,
        ),
    )


def sample_changes(
    conn: Any, run_id: str, n: int = 20, *, state_schema: str | None = None, kind: str = "email"
) -> list[dict[str, Any]]:
    """Up to ``n`` staged changes of a (dry) run with identities masked (``a***@e***.com``)."""
    stage = state.stage_table(state_schema, run_id)
    cur = conn.cursor()
    try:
        cur.execute(
            f"SELECT IDENTITY, REASON, BATCH_NO FROM {stage} ORDER BY BATCH_NO, IDENTITY LIMIT {int(n)}"
        )
        return [
            {"identity": mask_identity(identity, kind), "reason": reason, "batch": int(batch)}
            for identity, reason, batch in cur.fetchall()
        ]
    finally:
        cur.close()


def plan_run(
    conn: Any,
    defn: SyncDefinition,
    run_id: str,
    state_schema: str,
    dry_run: bool,
    full_resync: bool = False,
) -> ChangeSetSummary:
    """Check the definition against the warehouse and materialise this run's change set once; a full
    resync stages every row not accepted since its epoch began (``sync/resync.py``)."""
    state.ensure_state(conn, state_schema)
    types = validate_against_warehouse(defn, conn)
    since = epoch_start(conn, defn.name, run_id, state_schema, dry_run=dry_run) if full_resync else None
    return plan_changes(
        conn, defn, run_id, state_schema=state_schema, dry_run=dry_run, resync_since=since, source_types=types
    )
