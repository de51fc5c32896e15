"""Inbox fixtures: a migrated store on SQLite (tmp_path) and on the tests' own PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from iterable_recipes.store import Inbox, migrate


@pytest.fixture(scope="session")
def migrated_postgres(postgres_url: str) -> str:
    """The tests' PostgreSQL database, migrated once."""
    migrate(postgres_url)
    return postgres_url


@pytest.fixture(params=["sqlite", "postgres"])
def inbox_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A migrated, empty app database on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/nested/folder/recipes.db"
        migrate(url)
        yield url
        return
    url = request.getfixturevalue("migrated_postgres")
    store = Inbox(url)
    with store.engine.begin() as conn:
        conn.execute(text("TRUNCATE received_events, cursors, optout_audit RESTART IDENTITY"))
    store.dispose()
    yield url


@pytest.fixture
def inbox(inbox_url: str) -> Iterator[Inbox]:
    """An Inbox on ``inbox_url`` with small limits, so backoff and dead-lettering show quickly."""
    store = Inbox(inbox_url, max_attempts=3, backoff_base_seconds=10, backoff_cap_seconds=60)
    yield store
    store.dispose()
