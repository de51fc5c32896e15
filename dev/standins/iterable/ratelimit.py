"""Per-endpoint sliding windows (1 second unless an endpoint's limit is stated per minute): at most
``limit`` requests in any window, as Iterable enforces."""

from __future__ import annotations

import bisect
import math
from collections import deque

WINDOW_SECONDS = 1.0


class SlidingWindows:
    """One window of accepted-request times per endpoint; not thread-safe (the sandbox lock guards it)."""

    def __init__(self) -> None:
        self._windows: dict[str, deque[float]] = {}

    def acquire(
        self, endpoint: str, limit: float, now: float, window_seconds: float = WINDOW_SECONDS
    ) -> int | None:
        """Admit a request that arrived at ``now`` (monotonic seconds), or return the Retry-After seconds
        to answer."""
        window = self._windows.get(endpoint)
        if window is None:
            window = self._windows[endpoint] = deque()
        horizon = now - window_seconds
        while window and window[0] <= horizon:
            window.popleft()
        if len(window) >= max(1, int(limit)):
            return max(1, math.ceil(window[0] + window_seconds - now))
        # Arrival times, in order: a request whose body took longer to read may be admitted after one
        # that arrived later.
        bisect.insort(window, now)
        return None

    def clear(self) -> None:
        """Forget every request seen."""
        self._windows.clear()
