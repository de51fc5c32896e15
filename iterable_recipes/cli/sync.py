"""`recipes sync`: what the warehouse's change log says a sync did to one person."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from iterable_recipes.masking import mask_identity
from iterable_recipes.resources import Resources
from iterable_recipes.sync.change_log import history, identity_hash
from iterable_recipes.sync.definitions import SYNCS_DIR, load_named_sync

app = typer.Typer(help="The warehouse syncs: their change log.", no_args_is_help=True)


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
