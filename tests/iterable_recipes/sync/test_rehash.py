"""Snapshots written with the version 1 row hash are migrated on the first plan after the upgrade
(sync/rehash.py): nothing unchanged is sent, changed rows still are, and it runs once per sync."""

from __future__ import annotations

from typing import Any

from dev.warehouse import mutate, picked_emails
from iterable_recipes.sync import accept_all, accept_batch, iter_batches, plan_changes
from iterable_recipes.sync.definitions import SyncDefinition
from iterable_recipes.sync.rehash import migrate_hashes
from iterable_recipes.sync.sql import HASH_VERSION, identity_expr, row_hash_v1_expr, source_subquery
from iterable_recipes.sync.validate import describe_source
from tests.iterable_recipes.sync.conftest import ROWS, STATE, scalar

VERSIONS = f"{STATE}.SYNC_HASH_VERSIONS"


def _as_before_the_upgrade(conn: Any, defn: SyncDefinition) -> None:
    """Leave the state as the version 1 code left it: every stored hash the old expression's hash of
    the identity's current row, and no hash version recorded."""
    cur = conn.cursor()
    try:
        cur.execute(
            f"""CREATE OR REPLACE TEMPORARY TABLE OLD_HASHES AS
            SELECT {identity_expr(defn)} AS ID, {row_hash_v1_expr(defn)} AS H FROM {source_subquery(defn)}"""
        )
        for table in ("SYNC_SNAPSHOT", "SYNC_NOT_IN_ITERABLE"):
            cur.execute(
                f"""UPDATE {STATE}.{table} T SET ROW_HASH = O.H FROM OLD_HASHES O
                WHERE T.IDENTITY = O.ID AND T.SYNC_NAME = %s""",
                (defn.name,),
            )
        cur.execute(f"DELETE FROM {VERSIONS}")
    finally:
        cur.close()


def _staged(conn: Any, defn: SyncDefinition, run_id: str) -> set[str]:
    return {i for b in iter_batches(conn, defn, run_id, state_schema=STATE) for i in b.identities}


def test_an_upgrade_sends_nothing_unchanged_and_every_change(seeded: Any, gitlab: SyncDefinition) -> None:
    plan_changes(seeded, gitlab, "r1", state_schema=STATE)
    accept_all(seeded, gitlab, "r1", state_schema=STATE)
    _as_before_the_upgrade(seeded, gitlab)
    assert scalar(seeded, f"SELECT MIN(LENGTH(ROW_HASH)) FROM {STATE}.SYNC_SNAPSHOT") == 64  # SHA2's
    changed = mutate(seeded, 0.01, seed=7)
    assert changed > 0

    upgraded = plan_changes(seeded, gitlab, "r2", state_schema=STATE)
    assert (upgraded.new, upgraded.changed, upgraded.to_send) == (0, changed, changed)
    assert upgraded.unchanged == ROWS - changed
    assert _staged(seeded, gitlab, "r2") == {e.lower() for e in picked_emails(seeded, 0.01, seed=7)}
    cur = seeded.cursor()
    cur.execute(
        f"SELECT HASH_VERSION, MIGRATED_ROWS, RUN_ID FROM {VERSIONS} WHERE SYNC_NAME = %s",
        (gitlab.name,),
    )
    assert cur.fetchall() == [(HASH_VERSION, ROWS - changed, "r2")]
    cur.close()

    accept_all(seeded, gitlab, "r2", state_schema=STATE)
    after = plan_changes(seeded, gitlab, "r3", state_schema=STATE)
    assert (after.to_send, after.unchanged) == (0, ROWS)
    assert scalar(seeded, f"SELECT COUNT(*) FROM {VERSIONS}") == 1  # once per sync
    assert scalar(seeded, f"SELECT MAX(LENGTH(ROW_HASH)) FROM {STATE}.SYNC_SNAPSHOT") == 32  # MD5's


def test_people_waiting_as_not_in_iterable_keep_waiting(seeded: Any, gitlab: SyncDefinition) -> None:
    plan_changes(seeded, gitlab, "r1", state_schema=STATE)
    missing = set()
    for batch in iter_batches(seeded, gitlab, "r1", state_schema=STATE):
        unknown = set(batch.identities[:5])
        missing |= unknown
        accept_batch(seeded, gitlab, "r1", batch.batch_no, not_found=unknown, state_schema=STATE)
    _as_before_the_upgrade(seeded, gitlab)
    upgraded = plan_changes(seeded, gitlab, "r2", state_schema=STATE)
    assert (upgraded.to_send, upgraded.not_found_waiting) == (0, len(missing))


def test_a_migration_stopped_before_its_record_is_done_again_harmlessly(
    seeded: Any, gitlab: SyncDefinition
) -> None:
    plan_changes(seeded, gitlab, "r1", state_schema=STATE)
    accept_all(seeded, gitlab, "r1", state_schema=STATE)
    _as_before_the_upgrade(seeded, gitlab)
    types = describe_source(seeded, gitlab)
    assert migrate_hashes(seeded, gitlab, "m1", types, state_schema=STATE) == ROWS
    assert migrate_hashes(seeded, gitlab, "m2", types, state_schema=STATE) == 0  # recorded: not run
    cur = seeded.cursor()
    cur.execute(f"DELETE FROM {VERSIONS}")  # as if the first had stopped before its record
    cur.close()
    assert migrate_hashes(seeded, gitlab, "m3", types, state_schema=STATE) == 0  # nothing left to replace
    assert plan_changes(seeded, gitlab, "r2", state_schema=STATE).to_send == 0


def test_a_new_sync_records_its_version_without_rehashing(seeded: Any, gitlab: SyncDefinition) -> None:
    first = plan_changes(seeded, gitlab, "r1", state_schema=STATE)
    assert first.new == ROWS
    cur = seeded.cursor()
    cur.execute(f"SELECT HASH_VERSION, MIGRATED_ROWS FROM {VERSIONS}")
    assert cur.fetchall() == [(HASH_VERSION, 0)]
    cur.execute(f"SHOW TABLES LIKE 'SYNC_REHASH%' IN SCHEMA {STATE}")
    assert cur.fetchall() == []  # no scratch table made, none left behind
    cur.close()
