"""The rate-limiter interface clients take, and the in-memory one for a single process.

Clients call ``acquire(name)`` before each request to an endpoint named ``name``; the limiter blocks
until the request fits the endpoint's limit. ``slow_down(name, seconds)`` is called on a 429 so that
every sender sharing this limiter holds back, not only the request that was refused. Shared
implementations (SQLite file, Redis, PostgreSQL) live in ``clients.shared_limiters``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Rate:
    """At most ``limit`` requests per ``seconds``."""

    limit: int
    seconds: float = 1.0


@runtime_checkable
class RateLimiter(Protocol):
    """What a client needs from a limiter."""

    def acquire(self, name: str) -> None:
        """Block until one request to ``name`` may be sent."""

    def slow_down(self, name: str, seconds: float) -> None:
        """Hold back every request to ``name`` for ``seconds`` (the server said 429)."""


class NoLimiter:
    """Sends at once: for benchmarks of our own overhead and for endpoints without limits."""

    def acquire(self, name: str) -> None:
        """Never waits."""

    def slow_down(self, name: str, seconds: float) -> None:
        """Sleeps the caller only, since nothing else is being paced."""
        time.sleep(max(0.0, seconds))


class InMemoryLimiter:
    """Per-name rate limits for one process, thread-safe, spacing requests evenly (no burst).

    Names without a rate pass at once.
    """

    def __init__(self, rates: Mapping[str, Rate]) -> None:
        self._rates = dict(rates)
        self._next_free: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, name: str) -> None:
        """Reserve the next free slot for ``name`` and sleep until it comes."""
        rate = self._rates.get(name)
        if rate is None:
            return
        interval = rate.seconds / rate.limit
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_free.get(name, now))
            self._next_free[name] = slot + interval
        delay = slot - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def slow_down(self, name: str, seconds: float) -> None:
        """Push the next free slot of ``name`` at least ``seconds`` into the future."""
        with self._lock:
            until = time.monotonic() + max(0.0, seconds)
            self._next_free[name] = max(self._next_free.get(name, 0.0), until)
