"""`recipes db`: create or upgrade the app database (inbox, Marketo cursor, opt-out audit)."""

from __future__ import annotations

import typer

app = typer.Typer(help="The app database (RECIPES_DATABASE_URL).", no_args_is_help=True)


@app.command("migrate")
def migrate() -> None:
    """Apply every migration to the database named by RECIPES_DATABASE_URL (idempotent)."""
    from iterable_recipes.settings import load_settings
    from iterable_recipes.store.migrate import migrate as run_migrations

    settings = load_settings()
    run_migrations(settings.recipes_database_url)
    typer.echo("database is up to date")
