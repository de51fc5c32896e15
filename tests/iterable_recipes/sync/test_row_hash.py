"""The row hash (sync/sql.py): pinned on a fixed row, injective on awkward values, and every statement the
diff runs is Snowflake SQL that fakesnow translates one to one."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from dev.warehouse import mutate, remove_rows
from iterable_recipes.sync import accept_all, finish_run, iter_batches, plan_changes
from iterable_recipes.sync.definitions import SyncDefinition
from iterable_recipes.sync.sql import row_hash_expr
from iterable_recipes.sync.validate import describe_source
from tests.iterable_recipes.sync.conftest import STATE, send_all

TABLE = "PUBLIC.HASHED"
COLUMNS = """(POS INTEGER, EMAIL VARCHAR, A_TEXT VARCHAR, B_TEXT VARCHAR, C_INT NUMBER(38,0),
  D_DEC NUMBER(10,2), E_FLOAT FLOAT, F_BOOL BOOLEAN, G_DATE DATE, H_NTZ TIMESTAMP_NTZ,
  I_TZ TIMESTAMP_TZ, J_TIME TIME, K_VARIANT VARIANT)"""
FIXED_ROW = """'one@example.com', 'a' || CHR(31) || 'b', '', 42, 12.3, 1.5, TRUE, '2025-06-01'::DATE,
  '2025-06-01 01:02:03.123456'::TIMESTAMP_NTZ, '2025-06-01 01:02:03.123456 +02:00'::TIMESTAMP_TZ,
  '01:02:03.5'::TIME, PARSE_JSON('{"k":[1,2]}')"""

# The hash of FIXED_ROW under HASH_VERSION 2. Changing the expression changes it: that is a migration of
# every stored snapshot (raise HASH_VERSION, keep the old expression for sync/rehash.py), never an edit
# of this literal alone.
PINNED = "fc429eb0a2c9cb2335bb22f4f61cb1f3"


def _definition(fields: dict[str, dict[str, str]] | None = None) -> SyncDefinition:
    return SyncDefinition.model_validate(
        {
            "name": "hashed",
            "source": {"sql": f"SELECT * FROM {TABLE}"},
            "identity": {"column": "EMAIL", "kind": "email"},
            "fields": fields
            or {
                "A_TEXT": {"field": "a", "type": "string"},
                "B_TEXT": {"field": "b", "type": "string"},
                "C_INT": {"field": "c", "type": "number"},
                "D_DEC": {"field": "d", "type": "number"},
                "E_FLOAT": {"field": "e", "type": "number"},
                "F_BOOL": {"field": "f", "type": "boolean"},
                "G_DATE": {"field": "g", "type": "date"},
                "H_NTZ": {"field": "h", "type": "date"},
                "I_TZ": {"field": "i", "type": "date"},
                "J_TIME": {"field": "j", "type": "string"},
                "K_VARIANT": {"field": "k", "type": "object"},
            },
        }
    )


def _hashes(conn: Any, defn: SyncDefinition, rows: Sequence[str]) -> list[str]:
    """The row hash of each row (a SQL values list for COLUMNS), in order."""
    cur = conn.cursor()
    try:
        cur.execute(f"CREATE OR REPLACE TABLE {TABLE} {COLUMNS}")
        for pos, row in enumerate(rows):
            cur.execute(f"INSERT INTO {TABLE} SELECT {pos}, {row}")
        types = describe_source(conn, defn)
        cur.execute(f"SELECT {row_hash_expr(defn, types)} FROM {TABLE} AS M ORDER BY M.POS")
        return [h for (h,) in cur.fetchall()]
    finally:
        cur.close()


def test_the_hash_of_a_fixed_row_is_pinned(conn: Any) -> None:
    defn = _definition()
    (got,) = _hashes(conn, defn, [FIXED_ROW])
    # The input, spelt out: the fingerprint, then each column in sorted order; CHR(31) CHR(30) between;
    # the CHR(31) inside a text doubled; timestamps with nine fraction digits, a TZ one in UTC.
    sep = "\x1f\x1e"
    values = [
        "a\x1f\x1fb",
        "",
        "42",
        "12.30",
        "1.5",
        "true",
        "2025-06-01",
        "2025-06-01 01:02:03.123456000",
        "2025-05-31 23:02:03.123456000",
        "01:02:03.500000000",
        '{"k":[1,2]}',
    ]
    spelt = sep.join([defn.mapping_fingerprint, *values])
    assert got == hashlib.md5(spelt.encode()).hexdigest()
    assert got == PINNED


def test_no_two_different_rows_share_an_input(conn: Any) -> None:
    two_texts = {"A_TEXT": {"field": "a", "type": "string"}, "B_TEXT": {"field": "b", "type": "string"}}
    defn = _definition(two_texts)
    rest = "1, 1, 1, TRUE, NULL, NULL, NULL, NULL, NULL"
    pairs = [
        ("NULL", "''"),  # NULL is not empty
        ("''", "NULL"),
        ("NULL", "NULL"),
        ("''", "''"),
        ("CHR(31) || 'N'", "NULL"),  # a value spelling the NULL mark
        ("NULL", "CHR(31) || 'N'"),
        ("'x' || CHR(31) || CHR(30) || 'y'", "'z'"),  # a value spelling the separator
        ("'x'", "'y' || CHR(31) || CHR(30) || 'z'"),
        ("'x' || CHR(31)", "CHR(30) || 'z'"),
        ("'x'", "CHR(31) || CHR(30) || 'z'"),
        ("'x' || CHR(31) || CHR(31)", "'z'"),
        ("'x' || CHR(31)", "CHR(31) || 'z'"),
    ]
    rows = [f"'p@example.com', {a}, {b}, {rest}" for a, b in pairs]
    hashes = _hashes(conn, defn, rows)
    assert len(set(hashes)) == len(rows), hashes


def test_a_value_turning_null_and_a_mapping_change_change_the_hash(conn: Any) -> None:
    defn = _definition()
    nulled = FIXED_ROW.replace("42,", "NULL,", 1)
    pinned, turned_null = _hashes(conn, defn, [FIXED_ROW, nulled])
    assert pinned != turned_null
    rebuilt = _definition({c: {"field": m.field, "type": m.type.value} for c, m in defn.fields.items()})
    assert _hashes(conn, rebuilt, [FIXED_ROW]) == [pinned]  # the same mapping, built again
    moved = {c: {"field": m.field, "type": m.type.value} for c, m in defn.fields.items()}
    moved["C_INT"]["field"] = "c_elsewhere"
    assert _hashes(conn, _definition(moved), [FIXED_ROW]) != [pinned]


class _Recording:
    """A connection whose cursors record every statement with its bound parameters."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.statements: list[tuple[str, Any]] = []

    def cursor(self) -> Any:
        return _RecordingCursor(self.conn.cursor(), self.statements)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


class _RecordingCursor:
    def __init__(self, cur: Any, statements: list[tuple[str, Any]]) -> None:
        self.cur, self.statements = cur, statements

    def execute(self, sql: str, params: Any = None) -> Any:
        self.statements.append((sql, params))
        return self.cur.execute(sql, params) if params is not None else self.cur.execute(sql)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cur, name)


def _bound(sql: str, params: Any) -> str:
    """The statement with its parameters as literals (as the connector binds them client-side)."""
    if not params:
        return sql

    def literal(value: Any) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, int | float):
            return str(value)
        return "'" + str(value).replace("'", "''") + "'"

    return sql % tuple(literal(p) for p in params)


def test_every_statement_of_the_diff_is_snowflake_sql(seeded: Any, gitlab: SyncDefinition) -> None:
    """Each statement planning runs (first plan, upgrade from old hashes, departures, a resync, a dry
    run) parses with sqlglot's Snowflake dialect, and each formatted TO_VARCHAR is one sqlglot knows
    the type of (fakesnow drops the format of the others, so the test would not run what Snowflake
    runs)."""
    recorded = _Recording(seeded)
    clearing = gitlab.model_copy(update={"on_row_removed": "clear_fields"})
    first = plan_changes(recorded, clearing, "p1", state_schema=STATE)
    # One identity rejected, one not in Iterable: the next plans join both lists (left out when empty).
    batch = next(iter(iter_batches(seeded, clearing, "p1", state_schema=STATE)))
    refused, unknown = batch.identities[:2]
    send_all(seeded, clearing, "p1", rejected={refused: "invalid"}, not_found={unknown})
    finish_run(seeded, clearing, "p1", state_schema=STATE)
    cur = seeded.cursor()
    cur.execute(f"DELETE FROM {STATE}.SYNC_HASH_VERSIONS")  # as before the upgrade: every row rehashed
    cur.close()
    mutate(seeded, 0.01, seed=3)
    remove_rows(seeded, 0.01, seed=4_000)
    again = plan_changes(recorded, clearing, "p2", state_schema=STATE)
    assert first.new > 0 and again.changed > 0 and again.leaving > 0
    accept_all(seeded, clearing, "p2", state_schema=STATE)
    epoch = datetime.now(UTC) + timedelta(seconds=1)
    plan_changes(recorded, clearing, "p3", state_schema=STATE, resync_since=epoch)
    plan_changes(recorded, clearing, "p4", state_schema=STATE, dry_run=True)
    for batch in iter_batches(seeded, clearing, "p4", state_schema=STATE):
        assert batch.identities
        break

    statements = [_bound(sql, params) for sql, params in recorded.statements]
    assert any("SYNC_STAGE_P2 AS" in s for s in statements) and any("UPDATE" in s for s in statements)
    assert any("'rejected_retry'" in s and "'not_found_retry'" in s for s in statements)
    formatted = 0
    for sql in statements:
        (tree,) = sqlglot.parse(sql, read="snowflake")
        assert tree is not None, sql
        for call in tree.find_all(exp.ToChar):
            assert call.args.get("format") is None, f"a format sqlglot cannot type: {call.sql('snowflake')}"
        formatted += sum(1 for _ in tree.find_all(exp.TimeToStr))
    assert formatted >= 2 * 4  # the two timestamps of the model, hashed in the plans' second passes


@pytest.mark.parametrize("kind", ["TIMESTAMP_LTZ", "TIMESTAMP_TZ", "TIME", "DATE", "TIMESTAMP_NTZ"])
def test_each_temporal_type_is_hashed_through_a_typed_format(gitlab: SyncDefinition, kind: str) -> None:
    expression = row_hash_expr(gitlab, dict.fromkeys(gitlab.columns, kind))
    tree = sqlglot.parse_one(f"SELECT {expression} FROM T AS M", read="snowflake")
    assert len(list(tree.find_all(exp.TimeToStr))) == len(gitlab.columns)
    assert not list(tree.find_all(exp.ToChar))
