"""Each sync as `recipes sync list` shows it: its last run, that run's counts, what waits to be sent again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from iterable_recipes.sync import state
from iterable_recipes.sync.resync import current_epoch


@dataclass(frozen=True)
class SyncOverview:
    """One sync's state in the warehouse (None and zeros for a sync that never ran)."""

    name: str
    last_status: str | None
    last_finished_at: datetime | None
    accepted: int
    rejected: int
    not_in_iterable: int
    pending_rejected: int
    resync_since: datetime | None


def overview(conn: Any, name: str, state_schema: str | None = None) -> SyncOverview:
    """``name``'s last real run (the newest planned, dry runs aside), its counts, the rejected rows
    waiting for a later run and the start of an open full resync (the state schema must exist:
    ``state.ensure_state``)."""
    schema = state.state_schema_name(state_schema)
    runs, rejected_keys = state.table(schema, state.RUNS), state.table(schema, state.REJECTED)
    cur = conn.cursor()
    try:
        cur.execute(
            f"""SELECT STATUS, FINISHED_AT, ACCEPTED, REJECTED, NOT_IN_ITERABLE FROM {runs}
            WHERE SYNC_NAME = %s AND NOT COALESCE(DRY_RUN, FALSE) ORDER BY PLANNED_AT DESC LIMIT 1""",
            (name,),
        )
        last = cur.fetchone()
        cur.execute(f"SELECT COUNT(*) FROM {rejected_keys} WHERE SYNC_NAME = %s", (name,))
        pending = int(cur.fetchone()[0])
    finally:
        cur.close()
    status, finished, accepted, rejected, missing = last if last else (None, None, 0, 0, 0)
    return SyncOverview(
        name=name,
        last_status=None if status is None else str(status),
        last_finished_at=finished,
        accepted=int(accepted or 0),
        rejected=int(rejected or 0),
        not_in_iterable=int(missing or 0),
        pending_rejected=pending,
        resync_since=current_epoch(conn, name, schema),
    )
