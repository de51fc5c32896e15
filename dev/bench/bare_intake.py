"""The intake bench's reference: a bare Starlette endpoint that only stores the raw body, durably.

No signature, no validation, no SQLAlchemy: one route that reads the body, hands it to one writer thread
that inserts what waits with plain sqlite3 (WAL, ``synchronous=FULL``, the receiver's settings) and
commits, and answers 202 after the commit, as the receiver does. What the receiver costs beyond this
is its own work. Run by ``dev/bench/webhook_intake.py``:
``python -m dev.bench.bare_intake --port P --database FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Waiting = tuple[str, asyncio.Future[int], asyncio.AbstractEventLoop]
MAX_BATCH = 500


def open_database(path: str) -> sqlite3.Connection:
    """The file with the receiver's SQLite settings, and the one table."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS bare_events (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    return conn


class Writer:
    """One thread: insert every body waiting, commit once, then answer each (a group commit)."""

    def __init__(self, path: str) -> None:
        self.conn = open_database(path)
        self.waiting: queue.SimpleQueue[Waiting | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="bare-writer", daemon=True)

    async def add(self, body: str) -> int:
        """Store ``body``; returns its id once committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self.waiting.put((body, future, loop))
        return await future

    def _run(self) -> None:
        while True:
            first = self.waiting.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH and not self.waiting.empty():
                more = self.waiting.get()
                if more is None:
                    self.waiting.put(None)
                    break
                batch.append(more)
            self.conn.execute("BEGIN IMMEDIATE")
            insert = "INSERT INTO bare_events (body) VALUES (?) RETURNING id"
            ids = [self.conn.execute(insert, (body,)).fetchone()[0] for body, _, _ in batch]
            self.conn.execute("COMMIT")
            for (_, future, loop), new_id in zip(batch, ids, strict=True):
                loop.call_soon_threadsafe(_settle, future, new_id)

    def stop(self) -> None:
        """Let what waits commit, then stop."""
        self.waiting.put(None)
        self.thread.join(15)
        self.conn.close()


def _settle(future: asyncio.Future[int], new_id: int) -> None:
    if not future.done():
        future.set_result(new_id)


def create_app(path: str) -> Starlette:
    """The bare app over the SQLite file ``path``."""
    writer = Writer(path)

    async def intake(request: Request) -> Response:
        new_id = await writer.add((await request.body()).decode())
        return Response(b'{"id": %d}' % new_id, status_code=202, media_type="application/json")

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        writer.thread.start()
        try:
            yield
        finally:
            writer.stop()

    return Starlette(routes=[Route("/webhooks/customersdot", intake, methods=["POST"])], lifespan=lifespan)


def main() -> None:
    """Serve the bare endpoint until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m dev.bench.bare_intake")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database", required=True)
    args = parser.parse_args()
    # The receiver's uvicorn options (python -m iterable_recipes.receiver).
    app = create_app(args.database)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="error", access_log=False)


if __name__ == "__main__":
    main()
