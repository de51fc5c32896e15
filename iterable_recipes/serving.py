"""uvicorn serving an ASGI app on a daemon thread: the receiver inside `recipes serve`, and the stand-ins."""

from __future__ import annotations

import threading
import time
from typing import Any


class ServerThread:
    """A uvicorn server running in a daemon thread; ``url`` is its base URL."""

    def __init__(self, app: Any, host: str, port: int, name: str | None = None, **config: Any) -> None:
        import uvicorn

        self.port = port
        self.url = f"http://{host}:{port}"
        options: dict[str, Any] = {"log_level": "warning", "access_log": False} | config
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **options))
        self._thread = threading.Thread(target=self._server.run, name=name or f"uvicorn-{port}", daemon=True)

    def start(self, timeout: float = 30.0) -> ServerThread:
        """Start serving; wait until the socket listens (or fail when the thread died)."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Finish in-flight requests (the receiver commits before answering) and stop."""
        self._server.should_exit = True
        self._thread.join(timeout=timeout)
