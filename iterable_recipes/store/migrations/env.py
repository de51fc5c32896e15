"""Alembic environment: runs online against the connection store.migrate hands over (or the URL)."""

from __future__ import annotations

from alembic import context

from iterable_recipes.store.db import make_engine
from iterable_recipes.store.schema import metadata


def run() -> None:
    """Run the migrations on the given connection, or open one from sqlalchemy.url."""
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
