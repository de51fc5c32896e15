"""The rate-limiter interface clients take, its pacing rule, and the in-memory limiter for one process.

Clients call ``acquire(name)`` before each request to an endpoint named ``name``; the limiter blocks
until the request fits the endpoint's ``Rate``. ``slow_down(name, retry_after)`` is called on a 429 so
that every sender sharing this limiter holds back, not only the request that was refused. Shared
implementations (SQLite file, Redis, PostgreSQL) live in ``clients.shared_limiters``; all of them keep
the same state per name and follow the rule below, so they grant the same slots.

The rule (the one place of it):

- Pacing. Each name has one "next free slot". ``reserve`` takes it atomically and moves it one
  interval on (``Rate.seconds / Rate.limit``); ``acquire`` then sleeps exactly until the slot: no
  polling. Consecutive grants are therefore at least one interval apart, so any ``limit + 1`` grants
  span at least ``Rate.seconds``: at most ``limit`` in any window of ``Rate.seconds``. Callers widen
  the rate by the timing margin and share they want (``clients.iterable.paced_rates``).
- A 429. ``slow_down`` pushes the next slot to ``retry_after`` from now (capped at
  ``MAX_PAUSE_SECONDS``) or, without one, one interval of the lowered rate from now; and lowers the
  name's rate: the interval is divided by a factor that is halved on a 429 (at most once per window,
  since requests already in flight are refused together; never below ``MIN_FACTOR``) and grows back
  by ``RECOVERY_PER_WINDOW`` each window, up to the full rate. A 429 that says when to come back
  (Retry-After) and comes alone (no other 429 within ``REPEAT_WINDOWS``) only pauses: one request
  counted a few milliseconds early by Iterable is no sign the limit is shared, and halving the rate
  for it would cost seconds of sending. A second one within that time cuts the rate as above.
- Names without a rate pass at once but still honour pauses (``UNRATED_PAUSE_SECONDS`` without a
  Retry-After).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

__all__ = [
    "MAX_PAUSE_SECONDS",
    "MIN_FACTOR",
    "RECOVERY_PER_WINDOW",
    "REPEAT_WINDOWS",
    "UNRATED_PAUSE_SECONDS",
    "InMemoryLimiter",
    "NoLimiter",
    "Pace",
    "PaceState",
    "PacedLimiter",
    "Rate",
    "RateLimiter",
    "Slot",
    "throttled",
]

# A 429 halves the rate; it grows back by this share of the full rate per window (0.5 -> 1 in 5 windows).
DECREASE = 0.5
RECOVERY_PER_WINDOW = 0.1
MIN_FACTOR = 1 / 16
# A 429 with a Retry-After this many windows or more after the previous 429 is a lone one: pause only.
REPEAT_WINDOWS = 10
# A Retry-After longer than this is not believed (one bad header must not park every sender for hours).
MAX_PAUSE_SECONDS = 60.0
# A 429 on a name without a rate, and no Retry-After: nothing to lower, so hold it back this long.
UNRATED_PAUSE_SECONDS = 1.0


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

    def slow_down(self, name: str, retry_after: float | None = None) -> None:
        """The server refused a request to ``name`` (429): hold every sender back ``retry_after``
        seconds, or by the limiter's own back-off when None, and lower the name's rate for a while."""


class NoLimiter:
    """Sends at once: for benchmarks of our own overhead and for endpoints without limits."""

    def acquire(self, name: str) -> None:
        """Never waits."""

    def slow_down(self, name: str, retry_after: float | None = None) -> None:
        """Nothing is paced, so nothing to hold back (the client's retry policy waits instead)."""


@dataclass(frozen=True)
class Slot:
    """A granted slot: ``at`` in the limiter's own clock (seconds), ``wait`` seconds from now until it."""

    at: float
    wait: float


@dataclass(frozen=True)
class Pace:
    """A name's pacing parameters: ``interval`` between grants at the full rate (0: unrated), the
    ``window`` a 429 cuts the rate at most once in, and the factor regained per second."""

    interval: float
    window: float
    recover: float

    @classmethod
    def of(cls, rate: Rate | None) -> Pace:
        """The pace of ``rate`` (None: a name without a rate)."""
        if rate is None:
            return cls(0.0, 0.0, 0.0)
        return cls(rate.seconds / rate.limit, rate.seconds, RECOVERY_PER_WINDOW / rate.seconds)


@dataclass(frozen=True)
class PaceState:
    """What a backend keeps per name: the next free slot, and the rate factor's last cut and its time."""

    next_free: float
    cut: float = 1.0
    cut_at: float = 0.0

    def factor(self, pace: Pace, now: float) -> float:
        """The share of the full rate allowed at ``now``: the last cut plus what it regained since."""
        return min(1.0, self.cut + pace.recover * max(0.0, now - self.cut_at))

    def take(self, pace: Pace, now: float) -> tuple[float, PaceState]:
        """The slot granted at ``now`` and the state after it (the backends' statements do the same)."""
        slot = max(self.next_free, now)
        return slot, replace(self, next_free=slot + pace.interval / self.factor(pace, now))


def throttled(state: PaceState, pace: Pace, now: float, retry_after: float | None) -> PaceState:
    """The state after a 429 at ``now``: paused, and the rate cut unless it is a lone 429 with a
    Retry-After (see the module's rule). ``cut_at`` records every 429 outside a burst: a lone one sets
    it with the rate as it stands."""
    since = now - state.cut_at
    if pace.interval > 0 and since >= pace.window:
        factor = state.factor(pace, now)
        lone = retry_after is not None and since >= REPEAT_WINDOWS * pace.window
        state = replace(state, cut=factor if lone else max(MIN_FACTOR, DECREASE * factor), cut_at=now)
    if retry_after is not None and retry_after >= 0:
        pause = min(MAX_PAUSE_SECONDS, retry_after)
    elif pace.interval > 0:
        pause = pace.interval / state.factor(pace, now)
    else:
        pause = UNRATED_PAUSE_SECONDS
    return replace(state, next_free=max(state.next_free, now + pause))


class PacedLimiter:
    """What every limiter of the rule shares: rates by name, ``acquire`` as reserve-then-sleep.

    ``sleep`` is injectable so tests run on a clock of their own. Subclasses implement ``reserve``,
    ``slow_down`` and ``paused_for`` against their state.
    """

    def __init__(self, rates: Mapping[str, Rate], *, sleep: Callable[[float], None] = time.sleep) -> None:
        self._rates = dict(rates)
        self._sleep = sleep

    def pace(self, name: str) -> Pace:
        """The pacing parameters of ``name``."""
        return Pace.of(self._rates.get(name))

    def acquire(self, name: str) -> None:
        """Reserve the next free slot of ``name`` and sleep until it comes."""
        slot = self.reserve(name)
        if slot.wait > 0:
            self._sleep(slot.wait)

    def reserve(self, name: str) -> Slot:
        """Take the next free slot of ``name`` without waiting for it."""
        raise NotImplementedError

    def slow_down(self, name: str, retry_after: float | None = None) -> None:
        """Pause ``name`` and lower its rate (see the module's rule)."""
        raise NotImplementedError

    def paused_for(self, name: str) -> float:
        """Seconds until the next free slot of ``name`` (0 when one is free now)."""
        raise NotImplementedError


class InMemoryLimiter(PacedLimiter):
    """The rule for one process, thread-safe; ``clock`` (monotonic seconds) is injectable for tests."""

    def __init__(
        self,
        rates: Mapping[str, Rate],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(rates, sleep=sleep)
        self._clock = clock
        self._states: dict[str, PaceState] = {}
        self._lock = threading.Lock()

    def reserve(self, name: str) -> Slot:
        """Take the next free slot of ``name``."""
        pace = self.pace(name)
        with self._lock:
            now = self._clock()
            slot, self._states[name] = self._states.get(name, PaceState(now)).take(pace, now)
        return Slot(slot, slot - now)

    def slow_down(self, name: str, retry_after: float | None = None) -> None:
        """Pause ``name`` and lower its rate."""
        with self._lock:
            now = self._clock()
            self._states[name] = throttled(
                self._states.get(name, PaceState(now)), self.pace(name), now, retry_after
            )

    def paused_for(self, name: str) -> float:
        """Seconds until the next free slot of ``name``."""
        with self._lock:
            state = self._states.get(name)
            return 0.0 if state is None else max(0.0, state.next_free - self._clock())
