"""Stored row hashes moved to the current hash version once per sync, so an upgrade resends nothing.

The snapshot and the not-in-Iterable keys hold each identity's row hash as it was when Iterable
answered. When the hash expression changes (``sql.HASH_VERSION``), the first plan of each sync
computes the old and the new hash of the model's current rows and replaces a stored hash only where it
equals the old one: an unchanged row keeps counting as unchanged, a row changed since still differs.
Then the sync's version is recorded in the same transaction, so the work runs once and is durable before
the diff relies on it; a plan stopped half-way does it again, harmlessly (a replaced hash no longer
equals an old one).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from iterable_recipes.sync import state
from iterable_recipes.sync.definitions import SyncDefinition
from iterable_recipes.sync.sql import (
    HASH_VERSION,
    identity_expr,
    literal,
    row_hash_expr,
    row_hash_v1_expr,
    source_subquery,
    utc_now,
    utc_text,
)


def stored_version(cur: Any, schema: str, sync: str) -> int | None:
    """The hash version ``sync``'s stored hashes are in, or None when none was recorded (version 1,
    or a sync with no state yet)."""
    cur.execute(
        f"SELECT MAX(HASH_VERSION) FROM {state.table(schema, state.HASH_VERSIONS)} WHERE SYNC_NAME = %s",
        (sync,),
    )
    row = cur.fetchone()
    return int(row[0]) if row and row[0] is not None else None


def migrate_hashes(
    conn: Any,
    defn: SyncDefinition,
    run_id: str,
    types: Mapping[str, str],
    *,
    state_schema: str | None = None,
    now: datetime | None = None,
) -> int:
    """Bring ``defn``'s stored hashes to ``HASH_VERSION`` unless they are already; returns how many
    stored hashes were replaced (0 when there was nothing to do).

    ``types`` are the source's column types (``validate.describe_source``), as the diff hashes them.
    """
    schema = state.state_schema_name(state_schema)
    snap, nf = state.table(schema, state.SNAPSHOT), state.table(schema, state.NOT_FOUND)
    versions = state.table(schema, state.HASH_VERSIONS)
    sync = literal(defn.name)
    cur = conn.cursor()
    try:
        version = stored_version(cur, schema, defn.name)
        if version is not None and version >= HASH_VERSION:
            return 0
        cur.execute(
            f"""SELECT (SELECT COUNT(*) FROM {snap} WHERE SYNC_NAME = {sync})
              + (SELECT COUNT(*) FROM {nf} WHERE SYNC_NAME = {sync})"""
        )
        stored = int(cur.fetchone()[0] or 0)
        scratch = state.rehash_table(schema, run_id)
        if stored:
            # Identities of one row only: the diff never sends a duplicate, and one row gives one answer.
            cur.execute(
                f"""CREATE OR REPLACE TABLE {scratch} AS
                SELECT ID, ANY_VALUE(OLD_H) AS OLD_H, ANY_VALUE(NEW_H) AS NEW_H
                FROM (SELECT {identity_expr(defn)} AS ID, {row_hash_v1_expr(defn)} AS OLD_H,
                  {row_hash_expr(defn, types)} AS NEW_H FROM {source_subquery(defn)})
                WHERE ID IS NOT NULL GROUP BY ID HAVING COUNT(*) = 1"""
            )
        replaced = 0
        cur.execute("BEGIN")
        try:
            if stored:
                for name in (snap, nf):
                    cur.execute(
                        f"""UPDATE {name} T SET ROW_HASH = G.NEW_H FROM {scratch} G
                        WHERE T.SYNC_NAME = {sync} AND T.IDENTITY = G.ID AND T.ROW_HASH = G.OLD_H"""
                    )
                    replaced += max(cur.rowcount or 0, 0)
            cur.execute(
                f"""INSERT INTO {versions} (SYNC_NAME, HASH_VERSION, MIGRATED_AT, MIGRATED_ROWS, RUN_ID)
                VALUES (%s, %s, %s::TIMESTAMP_NTZ, %s, %s)""",
                (defn.name, HASH_VERSION, utc_text(now or utc_now()), replaced, run_id),
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        if stored:
            cur.execute(f"DROP TABLE IF EXISTS {scratch}")
        return replaced
    finally:
        cur.close()
