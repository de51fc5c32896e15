"""The warehouse layer against fakesnow in server mode: the connector over real HTTP, as in production."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakesnow
import pytest

from dev.warehouse import mutate, picked_emails, seed_model
from iterable_recipes.sync import accept_batch, connect, ensure_state, finish_run, iter_batches, plan_changes
from iterable_recipes.sync.batches import batch_query, fetched_pages
from iterable_recipes.sync.definitions import SyncDefinition


@pytest.fixture(scope="module")
def wire() -> Iterator[dict[str, Any]]:
    """One fakesnow server for the module, each connection to a database of its own: fakesnow.server
    can be called once a process (its first call imports the module of the same name over it)."""
    with fakesnow.server(session_parameters={"FAKESNOW_DB_PATH": ":isolated:"}) as params:
        yield params


def test_plan_read_accept_over_the_wire(gitlab: SyncDefinition, wire: dict[str, Any]) -> None:
    conn = connect(**wire, database="ANALYTICS", schema="PUBLIC")
    try:
        ensure_state(conn, "WIRE_STATE")
        seed_model(conn, 1_500)
        first = plan_changes(conn, gitlab, "w1", state_schema="WIRE_STATE", batch_size=600)
        assert (first.new, first.batches) == (1_500, 3)
        sizes = []
        for batch in iter_batches(conn, gitlab, "w1", state_schema="WIRE_STATE", fetch_size=400):
            sizes.append(len(batch))
            accept_batch(conn, gitlab, "w1", batch.batch_no, state_schema="WIRE_STATE")
        assert sizes == [600, 600, 300]
        assert finish_run(conn, gitlab, "w1", state_schema="WIRE_STATE").accepted == 1_500
        expected = picked_emails(conn, 0.02, seed=4)
        mutate(conn, 0.02, seed=4)
        plan_changes(conn, gitlab, "w2", state_schema="WIRE_STATE")
        read = [i for b in iter_batches(conn, gitlab, "w2", state_schema="WIRE_STATE") for i in b.identities]
        assert set(read) == expected and len(read) == len(expected) > 0
    finally:
        conn.close()


class _WithoutArrow:
    """A cursor that only fetches with ``fetchmany`` (as a JSON result or a cursor without Arrow)."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def fetchmany(self, size: int) -> list[Any]:
        return self._cursor.fetchmany(size)


# Every type a mapped column may hold, NULLs, an integer a float would round, a time zone off UTC.
EVERY_TYPE = """SELECT 1.5::NUMBER(10,2) AS D2, 9007199254740993::NUMBER(38,0) AS BIG,
    7::NUMBER(38,0) AS N, '2025-01-02'::DATE AS D, '2025-01-01 10:00:00.123456 +02:00'::TIMESTAMP_TZ AS TZ,
    '2025-03-04 05:06:07.891011'::TIMESTAMP_NTZ AS NTZ, 2.5::FLOAT AS FL, TRUE AS B, 'x' AS S,
    NULL::VARCHAR AS NV, NULL::NUMBER(38,0) AS NN, NULL::TIMESTAMP_NTZ AS NT, PARSE_JSON('{"a": [1]}') AS V"""


def test_arrow_pages_give_the_rows_and_types_fetchmany_gives(
    gitlab: SyncDefinition, wire: dict[str, Any]
) -> None:
    conn = connect(**wire, database="ANALYTICS", schema="PUBLIC")
    try:
        ensure_state(conn, "ARROW_STATE")
        seed_model(conn, 300)
        plan_changes(conn, gitlab, "a1", state_schema="ARROW_STATE", batch_size=100)
        queries = [(batch_query(gitlab, "a1", "ARROW_STATE"), (0, 3)), (EVERY_TYPE, None)]
        for query, binds in queries:
            cur = conn.cursor()
            cur.execute(query, binds)
            next(iter(cur.fetch_arrow_batches()))  # the result is Arrow: the path under test is taken
            cur.execute(query, binds)
            by_arrow = [row for page in fetched_pages(cur, 50) for row in page]
            cur.execute(query, binds)
            by_rows = [row for page in fetched_pages(_WithoutArrow(cur), 50) for row in page]
            assert len(by_arrow) == len(by_rows) > 0
            for arrow_row, plain_row in zip(by_arrow, by_rows, strict=True):
                assert list(arrow_row) == list(plain_row)
                assert [type(v) for v in arrow_row] == [type(v) for v in plain_row], plain_row
    finally:
        conn.close()
