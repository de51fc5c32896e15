"""Fixtures for the warehouse tests: a fakesnow connection seeded with the synthetic model and state."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import fakesnow
import pytest

from dev.warehouse import seed_model
from iterable_recipes.sync import accept_batch, connect, ensure_state, iter_batches, merge_answers
from iterable_recipes.sync.definitions import SyncDefinition, all_sync_definitions

STATE = "SYNC_STATE"
ROWS = 2_000  # small enough to keep the suite fast, several batches at BATCH = 500
BATCH = 500


@pytest.fixture
def gitlab() -> SyncDefinition:
    """GitLab's shipped sync definition."""
    return all_sync_definitions()["gitlab_marketing_contacts"]


@pytest.fixture
def conn() -> Iterator[Any]:
    """A fakesnow (patch mode) connection of this test's own, with the state schema created."""
    with fakesnow.patch():
        connection = connect(
            account="fake", user="fake", password="fake", database="ANALYTICS", schema="PUBLIC"
        )
        ensure_state(connection, STATE)
        try:
            yield connection
        finally:
            connection.close()


@pytest.fixture
def seeded(conn: Any) -> Any:
    """The connection with ROWS synthetic contacts in the model."""
    seed_model(conn, ROWS)
    return conn


def send_all(
    conn: Any,
    defn: SyncDefinition,
    run_id: str,
    *,
    rejected: Mapping[str, str] | None = None,
    not_found: set[str] | None = None,
    stop_after: int | None = None,
) -> list[str]:
    """Play Iterable: read every batch and accept it with the given outcomes, then merge the answers
    into the state (unless stopped half-way); returns identities read."""
    read: list[str] = []
    for batch in iter_batches(conn, defn, run_id, state_schema=STATE, fetch_size=700):
        read.extend(batch.identities)
        mine = set(batch.identities)
        accept_batch(
            conn,
            defn,
            run_id,
            batch.batch_no,
            rejected={k: v for k, v in (rejected or {}).items() if k in mine},
            not_found={k for k in (not_found or set()) if k in mine},
            state_schema=STATE,
        )
        if stop_after is not None and batch.batch_no >= stop_after:
            return read  # stopped half-way: the answers stay in the run's log, as after a crash
    merge_answers(conn, defn, run_id, STATE)  # as send_batches does when the sending ends
    return read


def scalar(conn: Any, sql: str) -> Any:
    """The first column of the first row."""
    cur = conn.cursor()
    cur.execute(sql)
    row = cur.fetchone()
    cur.close()
    return row[0]
