"""Serve an ASGI app with uvicorn on 127.0.0.1 in a background thread: real sockets for tests and demo."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from iterable_recipes import serving as serving_thread
from iterable_recipes.cli.local_stack import free_port

__all__ = ["ServerThread", "free_port", "serving"]


class ServerThread(serving_thread.ServerThread):
    """A uvicorn server on 127.0.0.1 (a free port unless given) in a daemon thread; ``url`` is its URL."""

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        super().__init__(app, "127.0.0.1", port or free_port(), **({"lifespan": "on"} | config))


@contextmanager
def serving(app: Any, port: int | None = None, **config: Any) -> Iterator[str]:
    """Serve ``app`` for the duration of the block and yield its base URL."""
    server = ServerThread(app, port=port, **config).start()
    try:
        yield server.url
    finally:
        server.stop()
