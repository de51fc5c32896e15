"""`recipes sync`: the syncs' state, a full resync, and what the change log says a sync did to one person."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from iterable_recipes.masking import mask_identity
from iterable_recipes.resources import Resources
from iterable_recipes.sync.change_log import history, identity_hash
from iterable_recipes.sync.definitions import SYNCS_DIR, load_named_sync, read_sync_definitions
from iterable_recipes.sync.overview import overview
from iterable_recipes.sync.state import ensure_state

app = typer.Typer(
    help="The warehouse syncs: their state, a full resync, their change log.", no_args_is_help=True
)
COLUMNS = (
    "sync", "kind", "mode", "last run", "ended (UTC)", "accepted", "rejected", "not in Iterable",
    "rejected waiting", "full resync open since",
)  # fmt: skip


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


@app.command("list")
def list_syncs() -> None:
    """Print each sync definition with its last run (status, end), that run's accepted, rejected and
    not-in-Iterable counts, the rejected rows waiting for a later run, and an open full resync."""
    resources = Resources.from_settings()
    with resources:
        settings = resources.settings
        found, problems = read_sync_definitions(settings.sync_definitions_dir or SYNCS_DIR)
        with resources.warehouse() as conn:
            ensure_state(conn, settings.snowflake_state_schema)
            rows = [
                (defn, overview(conn, name, settings.snowflake_state_schema))
                for name, defn in sorted(found.items())
            ]
    table = Table(title="syncs")
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for defn, seen in rows:
        counts = (seen.accepted, seen.rejected, seen.not_in_iterable, seen.pending_rejected)
        table.add_row(
            defn.name, defn.kind.value, defn.mode.value, seen.last_status or "never",
            _when(seen.last_finished_at), *(f"{n:,}" for n in counts), _when(seen.resync_since),
        )  # fmt: skip
    console = Console(width=200)
    console.print(table)
    for path, problem in problems.items():
        console.print(f"[bold red]not loaded[/] {path}: {problem}")
    if problems:
        raise typer.Exit(1)


@app.command("resync")
def resync(
    name: Annotated[str, typer.Argument(help="the sync's name (its file in SYNC_DEFINITIONS_DIR)")],
) -> None:
    """Run a full resync of the sync here: every row of its model sent again within Iterable's limits,
    without clearing its state first. Run it again after a failure to go on: rows Iterable accepted since
    the resync began are not sent twice. Print the run's counts."""
    from flows.snowflake_sync import snowflake_sync

    counts = snowflake_sync(name, full_resync=True)
    typer.echo("\n".join(f"{key}: {value}" for key, value in counts.items() if isinstance(value, int)))


@app.command("log")
def log(
    name: Annotated[str, typer.Argument(help="the sync's name (its file in SYNC_DEFINITIONS_DIR)")],
    identity: Annotated[
        str, typer.Option("--identity", help="the person's email address or user id, as the sync keys it")
    ],
    limit: Annotated[int, typer.Option(help="rows shown, newest first")] = 50,
) -> None:
    """Print each run's row for one person from the sync's change log (SYNC_CHANGE_LOG): operation,
    Iterable's answer, the error. The address is hashed here, never sent to the warehouse as text."""
    resources = Resources.from_settings()
    with resources:
        settings = resources.settings
        defn = load_named_sync(name, settings.sync_definitions_dir or SYNCS_DIR)
        digest = identity_hash(identity, defn.identity.kind)
        with resources.warehouse() as conn:
            entries = history(conn, defn.name, digest, settings.snowflake_state_schema, limit)
    shown = mask_identity(identity, defn.identity.kind.value)
    if not entries:
        typer.echo(f"No change-log rows of {defn.name} for {shown} (row {digest[:12]}).")
        raise typer.Exit(1)
    table = Table(title=f"{defn.name}: {shown} (row {digest[:12]})")
    for column in ("logged at (UTC)", "run", "operation", "status", "error"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        table.add_row(
            entry.logged_at.strftime("%Y-%m-%d %H:%M:%S"),
            entry.run_id,
            entry.operation,
            entry.status,
            entry.error,
        )
    Console(width=160).print(table)
