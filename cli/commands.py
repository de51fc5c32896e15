"""The commands of `recipes`, registered on the typer app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add every command group that exists to ``app``."""
    from cli import db

    app.add_typer(db.app, name="db")
    from cli import inbox

    app.add_typer(inbox.app, name="inbox")
    from cli import demo, serve, setup, status

    for module in (serve, demo, status, setup):
        module.register(app)
    from cli import bench, scan

    bench.register(app)
    scan.register(app)
