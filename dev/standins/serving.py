"""Serve an ASGI app with uvicorn on 127.0.0.1 in a background thread: real sockets for tests and demo."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from iterable_recipes.cli.local_stack import free_port

__all__ = ["ServerThread", "free_port", "serving"]


class ServerThread:
    """A uvicorn server running in a daemon thread; ``url`` is its base URL."""

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        options: dict[str, Any] = {"log_level": "warning", "access_log": False, "lifespan": "on"} | config
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, **options))
        self._thread = threading.Thread(target=self._server.run, name=f"uvicorn-{self.port}", daemon=True)

    def start(self, timeout: float = 10.0) -> ServerThread:
        """Start serving and wait until the socket accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)


@contextmanager
def serving(app: Any, port: int | None = None, **config: Any) -> Iterator[str]:
    """Serve ``app`` for the duration of the block and yield its base URL."""
    server = ServerThread(app, port=port, **config).start()
    try:
        yield server.url
    finally:
        server.stop()
