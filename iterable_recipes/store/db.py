"""One way to open the app database: SQLite (WAL, busy timeout) by default, PostgreSQL in production."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_MS = 10_000


def utcnow() -> datetime:
    """The current time, aware, in UTC (the store's one clock)."""
    return datetime.now(UTC)


def is_sqlite(url_or_engine: str | Engine) -> bool:
    """True when the URL or engine points at SQLite."""
    if isinstance(url_or_engine, Engine):
        return url_or_engine.dialect.name == "sqlite"
    return make_url(url_or_engine).get_backend_name() == "sqlite"


def ensure_sqlite_folder(url: str) -> None:
    """Create the folder of a SQLite file, so a fresh checkout starts without a manual mkdir."""
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)


def make_engine(url: str, *, sqlite_synchronous: str = "FULL", **options: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout, write transactions that lock at BEGIN and
    ``sqlite_synchronous`` (FULL: fsync at every commit; NORMAL: durable across a killed process only)."""
    if sqlite_synchronous not in {"FULL", "NORMAL"}:
        raise ValueError(f"sqlite_synchronous must be FULL or NORMAL, not {sqlite_synchronous!r}")
    if not is_sqlite(url):
        options.setdefault("pool_pre_ping", True)
        options.setdefault("pool_size", 10)
        return create_engine(url, **options)
    ensure_sqlite_folder(url)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **options)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver so SQLAlchemy's "begin" below decides how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # FULL (default): a commit is on disk before the receiver answers 2xx; group commit shares the fsync.
        cursor.execute(f"PRAGMA synchronous={sqlite_synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then writes
        # can fail with SQLITE_BUSY without waiting, which the busy timeout cannot help.
        # At the driver: a statement through SQLAlchemy costs more than taking the lock.
        connection.connection.driver_connection.execute("BEGIN IMMEDIATE")

    return engine
