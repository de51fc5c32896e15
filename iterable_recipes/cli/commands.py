"""The commands of `recipes`, registered on the typer app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add every command group that exists to ``app``."""
    from iterable_recipes.cli import db

    app.add_typer(db.app, name="db")
    from iterable_recipes.cli import inbox

    app.add_typer(inbox.app, name="inbox")
    from iterable_recipes.cli import consent

    app.add_typer(consent.app, name="consent")
    from iterable_recipes.cli import sync

    app.add_typer(sync.app, name="sync")
    from iterable_recipes.cli import check, checkout_tools, scan, serve, setup, status

    for module in (serve, check, status, setup, checkout_tools, scan):
        module.register(app)
