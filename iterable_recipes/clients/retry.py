"""The project's one retry policy: backoff inside a client call, and the outer Prefect task retries.

Two layers, each with its own job:

- inside a client, ``call_with_retries`` resends a request that failed with a ``RetryableError``
  (429, 5xx, 408, transport errors) a few times within seconds, honouring the server's Retry-After;
  a 429 the client's rate limiter was told of (``held_by_limiter``) is resent at once, since the
  limiter's next slot already holds the pause and the lowered rate (``clients.limiter``);
- around a task, Prefect retries the whole task after minutes (``TASK_RETRIES``,
  ``TASK_RETRY_DELAYS``), for outages longer than the client's budget.

Both the Iterable and the Marketo clients take a ``RetryPolicy`` so tests can make the delays tiny.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from iterable_recipes.clients.errors import RetryableError, is_retryable

__all__ = [
    "DEFAULT_RETRY",
    "NO_RETRY",
    "TASK_RETRIES",
    "TASK_RETRY_DELAYS",
    "TASK_RETRY_JITTER_FACTOR",
    "RetryPolicy",
    "call_with_retries",
]

T = TypeVar("T")
log = logging.getLogger(__name__)

# Outer layer: a Prefect task that still fails after the client's own retries waits minutes, not
# seconds, since by then the vendor is down or throttling hard. Tasks pass these to @task(...).
TASK_RETRIES = 3
TASK_RETRY_DELAYS: list[float] = [30.0, 120.0, 600.0]
TASK_RETRY_JITTER_FACTOR = 0.5


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a client resends a request that failed with a ``RetryableError``.

    ``attempts`` counts every try, the first included (1 means never retry). The wait after failed
    attempt *n* is ``base_delay * 2**(n-1)`` plus up to ``jitter`` times that at random, capped at
    ``max_delay``; a server's Retry-After replaces the backoff but is capped the same way, so one
    misbehaving header cannot park a worker for an hour.
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.jitter < 0:
            raise ValueError("delays and jitter must not be negative")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None and retry_after >= 0:
            # A small random spread keeps many workers told "wait 2 s" from returning in one burst.
            spread = random.uniform(0.0, self.jitter * self.base_delay)
            return min(self.max_delay, retry_after + spread)
        backoff = self.base_delay * (2 ** max(0, attempt - 1))
        backoff += random.uniform(0.0, self.jitter * backoff)
        return min(self.max_delay, backoff)


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)

OnRetry = Callable[[int, RetryableError, float], None]


def _log_retry(attempt: int, error: RetryableError, delay: float) -> None:
    # str(error) holds endpoint, status and vendor code only: no URL, email or key.
    log.warning("attempt %d failed (%s); retrying in %.2fs", attempt, error, delay)


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy = DEFAULT_RETRY,
    *,
    on_retry: OnRetry | None = _log_retry,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` until it returns, retrying ``RetryableError`` per ``policy``; other errors pass through.

    ``on_retry(attempt, error, delay)`` is called before each wait (a client uses it to slow its
    limiter down on a 429). After the last attempt the last ``RetryableError`` is raised.
    """
    attempt = 1
    while True:
        try:
            return fn()
        except RetryableError as error:
            if not is_retryable(error) or attempt >= policy.attempts:
                raise
            wait = 0.0 if error.held_by_limiter else policy.delay(attempt, error.retry_after)
            if on_retry is not None:
                on_retry(attempt, error, wait)
            sleep(wait)
            attempt += 1
