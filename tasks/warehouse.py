"""Tasks in the warehouse: plan a sync run's change set, check its people exist, preview it, list what it
cannot send, close it.

Results are counts and masked rows; the rows themselves stay in the warehouse (a dry run's preview
reads the sampled people from Iterable, and writes nothing).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from iterable_recipes.clients.iterable import IterableClient
from iterable_recipes.config_files import ConfigError
from iterable_recipes.not_sent import NOT_SENT_ROWS
from iterable_recipes.resources import Resources
from iterable_recipes.sync import finish_run, invalid_rows, plan_run
from iterable_recipes.sync.change_log import not_sent_rows
from iterable_recipes.sync.definitions import SyncDefinition
from iterable_recipes.sync.existence import ExistenceCheck, check_existence
from iterable_recipes.sync.preview import Preview, preview_rows, staged_sample
from iterable_recipes.sync.results import ChangeSetSummary, RunCounts
from iterable_recipes.sync.resync import close_epoch

WAREHOUSE_TASK_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}


@task(name="plan-sync-run", **WAREHOUSE_TASK_OPTIONS)
def plan_sync(
    conn: Any, defn: SyncDefinition, run_id: str, schema: str, dry_run: bool, full_resync: bool = False
) -> ChangeSetSummary:
    """Diff the model against the sync's state in the warehouse and stage this run's change set once
    (a full resync: every row not accepted since its epoch began)."""
    return plan_run(conn, defn, run_id, schema, dry_run, full_resync)


@task(name="close-full-resync", **WAREHOUSE_TASK_OPTIONS)
def close_resync(conn: Any, defn: SyncDefinition, schema: str) -> None:
    """The full resync's epoch is over: its run sent every row and Iterable answered each batch."""
    close_epoch(conn, defn.name, schema)


@task(name="check-sync-people-exist", **WAREHOUSE_TASK_OPTIONS)
def check_sync_existence(
    resources: Resources, conn: Any, defn: SyncDefinition, run_id: str, schema: str
) -> ExistenceCheck:
    """Update mode by email: check the staged people not seen in Iterable recently (getByEmail up to
    SYNC_EXPORT_THRESHOLD, else one user export); the unknown ones are recorded and left unsent."""
    settings = resources.settings
    return check_existence(
        conn, resources.iterable, defn, run_id,
        state_schema=schema,
        threshold=settings.sync_export_threshold,
        refresh_days=settings.sync_existence_refresh_days,
    )  # fmt: skip


@task(name="preview-sync-changes", **WAREHOUSE_TASK_OPTIONS)
def preview_sync(
    resources: Resources, conn: Any, defn: SyncDefinition, run_id: str, schema: str, rows: int
) -> Preview:
    """A dry run's preview of ``rows`` staged rows: each field now in Iterable (read within its limits,
    "unknown" where Iterable did not answer) beside what the run would write; masked.

    A dry run needed only the warehouse before it read Iterable: without a usable Iterable setting
    (no key, a block that does not load) it still previews, every value Iterable holds unknown.
    """
    client: IterableClient | Exception
    try:
        client = resources.iterable
    except (ConfigError, ValueError) as exc:
        client = exc
    return preview_rows(client, defn, staged_sample(conn, defn, run_id, rows, state_schema=schema))


@task(name="list-invalid-sync-rows", **WAREHOUSE_TASK_OPTIONS)
def list_invalid_rows(
    conn: Any, defn: SyncDefinition, run_id: str, schema: str, plan: ChangeSetSummary
) -> list[dict[str, Any]]:
    """The rows the planned run cannot send (NULL, blank or duplicate identity), masked and capped."""
    return invalid_rows(conn, run_id, plan, state_schema=schema, kind=defn.identity.kind.value)


@task(name="list-sync-rows-not-sent", **WAREHOUSE_TASK_OPTIONS)
def list_rows_not_sent(
    conn: Any, defn: SyncDefinition, run_id: str, schema: str
) -> tuple[list[dict[str, str]], int]:
    """The run's rows Iterable did not take (masked, capped) from the change log, and how many in all."""
    return not_sent_rows(conn, defn, run_id, schema, NOT_SENT_ROWS)


@task(name="finish-sync-run", **WAREHOUSE_TASK_OPTIONS)
def finish_sync(
    conn: Any, defn: SyncDefinition, run_id: str, schema: str, status: str, log_days: float | None = None
) -> RunCounts:
    """Write the run-history row's outcome, drop the run's staging table, expire the change log."""
    return finish_run(conn, defn, run_id, status=status, state_schema=schema, log_days=log_days)
