"""Per-endpoint 1-second sliding windows: at most ``limit`` requests in any second, as Iterable enforces."""

from __future__ import annotations

import math
from collections import deque

WINDOW_SECONDS = 1.0


class SlidingWindows:
    """One window of accepted-request times per endpoint; not thread-safe (the sandbox lock guards it)."""

    def __init__(self) -> None:
        self._windows: dict[str, deque[float]] = {}

    def acquire(self, endpoint: str, limit: float, now: float) -> int | None:
        """Admit a request at ``now`` (monotonic seconds), or return the Retry-After seconds to answer."""
        window = self._windows.get(endpoint)
        if window is None:
            window = self._windows[endpoint] = deque()
        horizon = now - WINDOW_SECONDS
        while window and window[0] <= horizon:
            window.popleft()
        if len(window) >= max(1, int(limit)):
            return max(1, math.ceil(window[0] + WINDOW_SECONDS - now))
        window.append(now)
        return None

    def clear(self) -> None:
        """Forget every request seen."""
        self._windows.clear()
