"""Rows a run cannot send (NULL, blank or duplicate identity): kept when planning, listed masked, capped."""

from __future__ import annotations

from typing import Any

import pytest

from dev.warehouse import MODEL_TABLE, remove_rows
from iterable_recipes.sync import accept_all, finish_run, plan_changes
from iterable_recipes.sync.definitions import SyncDefinition
from iterable_recipes.sync.invalid import invalid_rows, invalid_summary
from tests.iterable_recipes.sync.conftest import BATCH, STATE, scalar


def plan(conn: Any, defn: SyncDefinition, run_id: str, **kw: Any):
    kw.setdefault("batch_size", BATCH)
    return plan_changes(conn, defn, run_id, state_schema=STATE, **kw)


def _break_identities(conn: Any) -> None:
    """Two NULL identities, one blank, and a second spelling of user10's address."""
    cur = conn.cursor()
    cur.execute(f"UPDATE {MODEL_TABLE} SET EMAIL_ADDRESS = NULL WHERE USER_ID IN (1, 2)")
    cur.execute(f"UPDATE {MODEL_TABLE} SET EMAIL_ADDRESS = '  ' WHERE USER_ID = 3")
    cur.execute(f"UPDATE {MODEL_TABLE} SET EMAIL_ADDRESS = 'User10@Example.com' WHERE USER_ID = 11")


def test_rows_that_cannot_be_sent_are_listed_masked_with_their_reason(
    seeded: Any, gitlab: SyncDefinition
) -> None:
    _break_identities(seeded)
    summary = plan(seeded, gitlab, "r1")
    assert summary.invalid_rows == 5
    rows = invalid_rows(seeded, "r1", summary, state_schema=STATE)
    assert rows == [
        {"identity": "(null)", "reason": "null identity", "rows": 2},
        {"identity": "(blank)", "reason": "blank identity", "rows": 1},
        {"identity": "u***@e***.com", "reason": "duplicate identity", "rows": 2},
    ]
    assert "@example.com" not in str(rows).lower() and "user10" not in str(rows).lower()
    assert invalid_summary(summary) == (
        "5 row(s) of gitlab_marketing_contacts cannot be sent: 3 with a NULL or blank identity, "
        "2 sharing 1 duplicated identity"
    )
    finish_run(seeded, gitlab, "r1", state_schema=STATE)
    with pytest.raises(Exception, match=r"(?i)does not exist|not found"):
        invalid_rows(seeded, "r1", summary, state_schema=STATE)  # finish_run dropped the run's tables


def test_the_list_is_capped_with_a_last_row_saying_how_many_more(seeded: Any, gitlab: SyncDefinition) -> None:
    cur = seeded.cursor()
    cur.execute(f"UPDATE {MODEL_TABLE} SET EMAIL_ADDRESS = NULL WHERE USER_ID = 1")
    # Five identities twice each: user(10k)'s address given to row 10k+1 as well.
    cur.execute(
        f"""UPDATE {MODEL_TABLE} SET EMAIL_ADDRESS = 'user' || (USER_ID - 1) || '@example.com'
        WHERE USER_ID IN (11, 21, 31, 41, 51)"""
    )
    summary = plan(seeded, gitlab, "r1")
    rows = invalid_rows(seeded, "r1", summary, state_schema=STATE, limit=3)
    # NULL and blank identities are always listed; the limit is on the duplicated identities.
    assert [r["reason"] for r in rows[:4]] == ["null identity"] + ["duplicate identity"] * 3
    assert rows[4:] == [{"identity": "...", "reason": "2 more duplicate identities not listed", "rows": 4}]


def test_a_clean_model_has_nothing_to_list(seeded: Any, gitlab: SyncDefinition) -> None:
    summary = plan(seeded, gitlab, "r1")
    assert summary.invalid_rows == 0
    assert invalid_rows(seeded, "r1", summary, state_schema=STATE) == []


def test_a_sync_refusing_invalid_rows_leaves_its_state_alone(seeded: Any, gitlab: SyncDefinition) -> None:
    plan(seeded, gitlab, "r1")
    accept_all(seeded, gitlab, "r1", state_schema=STATE)
    before = scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.SYNC_SNAPSHOT")
    assert remove_rows(seeded, 0.02, seed=1) > 0
    _break_identities(seeded)
    strict = gitlab.model_copy(update={"on_invalid_rows": "fail"})
    # The refused run sends nothing, so it forgets nobody either: a model whose identity column broke
    # must not wipe the snapshot (the fixed model's next run would resend every row).
    summary = plan(seeded, strict, "r2")
    assert summary.removed_from_state == 0 and summary.invalid_rows == 5
    assert scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.SYNC_SNAPSHOT") == before
    # The default (warn) sends the valid rows and forgets those that left, as before.
    assert plan(seeded, gitlab, "r3").removed_from_state > 0
