"""A full resync's epoch: every row of the model sent again, each at most once however often it is retried.

Opening a resync records when its epoch started, unless one is open already (a retried run, or the same
command given again): then that epoch goes on. The plan sends every row whose snapshot entry was accepted
before the epoch started, so rows accepted since are not sent twice; the epoch closes when a run of it
ended with every batch accepted. The snapshot is never cleared first: a resync stopped half-way leaves a
sync that still knows everything it knew.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from iterable_recipes.sync import state
from iterable_recipes.sync.sql import utc_now, utc_text


def epoch_start(
    conn: Any,
    sync: str,
    run_id: str,
    state_schema: str | None = None,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> datetime:
    """The start of ``sync``'s open resync epoch (naive UTC), opening one at ``now`` when none is open;
    a dry run opens none and previews a resync that would start now."""
    started = current_epoch(conn, sync, state_schema)
    if started is not None:
        return started
    at = now or utc_now()
    if not dry_run:
        table = state.table(state.state_schema_name(state_schema), state.RESYNCS)
        cur = conn.cursor()
        try:
            cur.execute(
                f"INSERT INTO {table} (SYNC_NAME, STARTED_AT, RUN_ID) VALUES (%s, %s::TIMESTAMP_NTZ, %s)",
                (sync, utc_text(at), run_id),
            )
        finally:
            cur.close()
    return at.replace(tzinfo=None) if at.tzinfo else at


def current_epoch(conn: Any, sync: str, state_schema: str | None = None) -> datetime | None:
    """When ``sync``'s open resync epoch started (naive UTC), or None."""
    table = state.table(state.state_schema_name(state_schema), state.RESYNCS)
    cur = conn.cursor()
    try:
        cur.execute(
            f"SELECT MIN(STARTED_AT) FROM {table} WHERE SYNC_NAME = %s AND FINISHED_AT IS NULL", (sync,)
        )
        row = cur.fetchone()
    finally:
        cur.close()
    return row[0] if row and row[0] is not None else None


def close_epoch(conn: Any, sync: str, state_schema: str | None = None, now: datetime | None = None) -> None:
    """Close ``sync``'s open resync epoch: every row of the model was sent again and answered."""
    table = state.table(state.state_schema_name(state_schema), state.RESYNCS)
    cur = conn.cursor()
    try:
        cur.execute(
            f"""UPDATE {table} SET FINISHED_AT = %s::TIMESTAMP_NTZ
            WHERE SYNC_NAME = %s AND FINISHED_AT IS NULL""",
            (utc_text(now or utc_now()), sync),
        )
    finally:
        cur.close()
