"""The sync's identity in SQL keys people exactly as ``normalise_email`` does in Python."""

from __future__ import annotations

from typing import Any

import pytest
import sqlglot

from iterable_recipes.identities import TRIM_CHARS, normalise_email
from iterable_recipes.sync.definitions import SyncDefinition
from iterable_recipes.sync.sql import identity_expr

AWKWARD = [
    " Padded@Example.com ",
    "\tTabbed@EXAMPLE.com\n",
    "\u00a0nbsp@example.com\u00a0",
    "\ufeffbom@example.com",
    "\u3000ideographic@example.com\u2029",
    "\u200bzero.width@example.com\u2060",
    "inner space@example.com",  # left alone inside: not an address, refused elsewhere
    "MiXeD.CaSe@Example.COM",
    "",
    "   ",
    "\u00a0\u2007",
    None,
    "plain@example.com",
] + [f"{char}each@example.com{char}" for char in TRIM_CHARS]


def test_the_sql_identity_agrees_with_python_on_awkward_addresses(conn: Any, gitlab: SyncDefinition):
    cur = conn.cursor()
    cur.execute("CREATE OR REPLACE TEMPORARY TABLE AWKWARD (N INTEGER, EMAIL_ADDRESS VARCHAR)")
    cur.executemany("INSERT INTO AWKWARD VALUES (%s, %s)", list(enumerate(AWKWARD)))
    cur.execute(f"SELECT N, {identity_expr(gitlab)} FROM AWKWARD AS M ORDER BY N")
    got = dict(cur.fetchall())
    expected = {n: (normalise_email(v) or None) if v is not None else None for n, v in enumerate(AWKWARD)}
    assert got == expected


@pytest.mark.parametrize("kind", ["email", "user_id"])
def test_the_identity_is_valid_snowflake_sql(gitlab: SyncDefinition, kind: str):
    defn = gitlab.model_copy(update={"identity": gitlab.identity.model_copy(update={"kind": kind})})
    parsed = sqlglot.parse_one(f"SELECT {identity_expr(defn)} FROM T AS M", read="snowflake")
    assert parsed.find(sqlglot.exp.Trim) is not None


ONE_SIDED = [
    "trailing@example.com\u00a0",
    "trailing.crlf@example.com\r\n",
    "\u2028leading@example.com",
    "in\u00a0side@example.com",  # inner only: nothing to trim
    "x",
    "\u00a0",
    "Both.Ends\u200b@Example.com\u3000",
]


def test_the_trim_shortcut_agrees_where_only_one_end_or_the_inside_holds_a_trimmed_character(
    conn: Any, gitlab: SyncDefinition
):
    """The identity skips TRIM unless the first or last character is one it removes (a cost of
    fakesnow's); the addresses that shortcut could get wrong."""
    cur = conn.cursor()
    cur.execute("CREATE OR REPLACE TEMPORARY TABLE ONE_SIDED (N INTEGER, EMAIL_ADDRESS VARCHAR)")
    cur.executemany("INSERT INTO ONE_SIDED VALUES (%s, %s)", list(enumerate(ONE_SIDED)))
    cur.execute(f"SELECT N, {identity_expr(gitlab)} FROM ONE_SIDED AS M ORDER BY N")
    assert dict(cur.fetchall()) == {n: normalise_email(v) or None for n, v in enumerate(ONE_SIDED)}
