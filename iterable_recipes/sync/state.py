"""The sync state schema in the warehouse: snapshot, rejected and unknown keys, runs, the change log,
the people known to exist, the row hash version of each sync's stored hashes."""

from __future__ import annotations

import re
from typing import Any

from iterable_recipes.settings import load_settings

SNAPSHOT = "SYNC_SNAPSHOT"
REJECTED = "SYNC_REJECTED"
NOT_FOUND = "SYNC_NOT_IN_ITERABLE"
RUNS = "SYNC_RUNS"
CHANGE_LOG = "SYNC_CHANGE_LOG"
RESYNCS = "SYNC_RESYNCS"
KNOWN = "SYNC_KNOWN_PEOPLE"
HASH_VERSIONS = "SYNC_HASH_VERSIONS"

_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")

# One table per kind of state, keyed by (sync, identity): a new sync needs no DDL.
_DDL = {
    SNAPSHOT: """(SYNC_NAME VARCHAR NOT NULL, IDENTITY VARCHAR NOT NULL, ROW_HASH VARCHAR NOT NULL,
        ACCEPTED_AT TIMESTAMP_NTZ NOT NULL, RUN_ID VARCHAR)""",
    REJECTED: """(SYNC_NAME VARCHAR NOT NULL, IDENTITY VARCHAR NOT NULL, REASON VARCHAR,
        ATTEMPTS INTEGER NOT NULL, FIRST_AT TIMESTAMP_NTZ NOT NULL, LAST_AT TIMESTAMP_NTZ NOT NULL,
        RUN_ID VARCHAR)""",
    NOT_FOUND: """(SYNC_NAME VARCHAR NOT NULL, IDENTITY VARCHAR NOT NULL, ROW_HASH VARCHAR NOT NULL,
        ATTEMPTS INTEGER NOT NULL, FIRST_AT TIMESTAMP_NTZ NOT NULL, SEEN_AT TIMESTAMP_NTZ NOT NULL,
        RUN_ID VARCHAR)""",
    RUNS: """(RUN_ID VARCHAR NOT NULL, SYNC_NAME VARCHAR NOT NULL, STATUS VARCHAR NOT NULL, DRY_RUN BOOLEAN,
        PLANNED_AT TIMESTAMP_NTZ, FINISHED_AT TIMESTAMP_NTZ, MAPPING VARCHAR,
        ROWS_IN_MODEL INTEGER, NEW_ROWS INTEGER, CHANGED_ROWS INTEGER, UNCHANGED_ROWS INTEGER,
        REJECTED_RETRY INTEGER, NOT_FOUND_RETRY INTEGER, NOT_FOUND_WAITING INTEGER,
        DUPLICATE_ROWS INTEGER, DUPLICATE_IDENTITIES INTEGER, NULL_IDENTITIES INTEGER,
        REMOVED_FROM_STATE INTEGER, TO_SEND INTEGER, BATCHES INTEGER,
        ACCEPTED INTEGER, REJECTED INTEGER, NOT_IN_ITERABLE INTEGER)""",
    # One row per row sent and what became of it; the identity only as its SHA-256 (sync/change_log.py).
    CHANGE_LOG: """(SYNC_NAME VARCHAR NOT NULL, RUN_ID VARCHAR NOT NULL, IDENTITY_HASH VARCHAR NOT NULL,
        OPERATION VARCHAR NOT NULL, STATUS VARCHAR NOT NULL, ERROR VARCHAR,
        LOGGED_AT TIMESTAMP_NTZ NOT NULL)""",
    # A full resync's epoch: open until a run of it sent every row (sync/resync.py).
    RESYNCS: """(SYNC_NAME VARCHAR NOT NULL, STARTED_AT TIMESTAMP_NTZ NOT NULL, FINISHED_AT TIMESTAMP_NTZ,
        RUN_ID VARCHAR)""",
    # Update mode by email: people of the sync seen to exist in Iterable, and when (sync/existence.py).
    KNOWN: """(SYNC_NAME VARCHAR NOT NULL, IDENTITY VARCHAR NOT NULL, SEEN_AT TIMESTAMP_NTZ NOT NULL)""",
    # The row hash version each sync's stored hashes are in, once they were migrated (sync/rehash.py).
    HASH_VERSIONS: """(SYNC_NAME VARCHAR NOT NULL, HASH_VERSION INTEGER NOT NULL,
        MIGRATED_AT TIMESTAMP_NTZ NOT NULL, MIGRATED_ROWS INTEGER, RUN_ID VARCHAR)""",
}


def state_schema_name(state_schema: str | None = None) -> str:
    """The state schema (settings.snowflake_state_schema by default), checked to be a plain identifier."""
    name = state_schema or load_settings().snowflake_state_schema
    if not _SCHEMA.match(name):
        raise ValueError(f"state schema {name!r} is not a [DATABASE.]SCHEMA identifier")
    return name.upper()


def table(state_schema: str | None, name: str) -> str:
    """A state table's qualified name."""
    return f"{state_schema_name(state_schema)}.{name}"


def run_suffix(run_id: str) -> str:
    """The run id as a table-name suffix; run ids are letters, digits, '_' and '-' (a UUID fits)."""
    if not _RUN_ID.match(run_id):
        raise ValueError("run_id must be 1-64 letters, digits, '_' or '-'")
    return run_id.replace("-", "_").upper()


def stage_table(state_schema: str | None, run_id: str) -> str:
    """The run's staging table: its change set (identity, row hash, reason, batch number)."""
    return table(state_schema, f"SYNC_STAGE_{run_suffix(run_id)}")


def answers_table(state_schema: str | None, run_id: str) -> str:
    """The run's answer log: Iterable's answer per batch, until merged into the state (sync/answers.py)."""
    return table(state_schema, f"SYNC_ANSWERS_{run_suffix(run_id)}")


def work_table(state_schema: str | None, run_id: str) -> str:
    """The run's scratch table: one row per identity of the model, dropped when planning ends."""
    return table(state_schema, f"SYNC_WORK_{run_suffix(run_id)}")


def rehash_table(state_schema: str | None, run_id: str) -> str:
    """The run's scratch table of old and new row hashes while it migrates stored hashes (sync/rehash.py)."""
    return table(state_schema, f"SYNC_REHASH_{run_suffix(run_id)}")


def invalid_table(state_schema: str | None, run_id: str) -> str:
    """The run's list of identities it cannot send (a bounded few, for its report), kept from planning."""
    return table(state_schema, f"SYNC_INVALID_{run_suffix(run_id)}")


def ensure_state(conn: Any, state_schema: str | None = None) -> None:
    """Create the state schema and its tables if missing; safe to call on every run."""
    schema = state_schema_name(state_schema)
    cur = conn.cursor()
    try:
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for name, columns in _DDL.items():
            cur.execute(f"CREATE TABLE IF NOT EXISTS {schema}.{name} {columns}")
    finally:
        cur.close()
