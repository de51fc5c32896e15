"""The limiters' pacing rule, the same on every backend (in memory, a SQLite file, Redis, PostgreSQL):
slots computed, never polled; at most N in any window across real processes, counted in the
limiter's own clock; a 429's pause, rate cut and recovery on an injected clock."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dev.bench.limiters import PAUSED_NAME, Backend, cleanup, combined_rate, most_in_window, run_processes
from iterable_recipes.clients.iterable import ITERABLE_RATE_LIMITS, paced_rates
from iterable_recipes.clients.limiter import (
    MAX_PAUSE_SECONDS,
    MIN_FACTOR,
    REPEAT_WINDOWS,
    UNRATED_PAUSE_SECONDS,
    InMemoryLimiter,
    PacedLimiter,
    Rate,
    RateLimiter,
)
from iterable_recipes.clients.shared_limiters import (
    PostgresLimiter,
    RedisLimiter,
    SQLiteLimiter,
    postgres_conninfo,
)

ENDPOINTS = ("users/bulkUpdate", "users/getByEmail")
SECONDS = 2.5


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind = request.param
    prefix = f"t_{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        yield Backend("sqlite", str(tmp_path / "limiter.sqlite"), prefix)
        return
    if kind == "redis":
        redis_url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        yield Backend("redis", redis_url, prefix)
        return
    backend = Backend("postgres", request.getfixturevalue("postgres_url"), prefix)
    try:
        yield backend
    finally:
        cleanup(backend)


def test_two_processes_together_never_get_more_than_n_in_any_window(backend: Backend) -> None:
    paced = paced_rates()
    result = run_processes(backend, {n: paced[n] for n in ENDPOINTS}, SECONDS, pause_seconds=60.0)

    assert len(result.per_process) == 2
    for counts in result.per_process:
        assert all(counts[n] > 0 for n in ENDPOINTS), "both processes must be granted slots"
    for name in ENDPOINTS:
        ceiling = ITERABLE_RATE_LIMITS[name]
        # Slot times are the backend's own clock (or its wall clock for SQLite), recorded with each
        # grant: the count does not depend on how fast this machine woke the senders.
        times = result.times[name]
        assert len(set(times)) == len(times), f"{name}: a slot was granted twice"
        assert most_in_window(times, ceiling.seconds) <= ceiling.limit, name
        # Never faster than the paced rate, but for float rounding of epoch seconds (how close to it
        # the senders come is the bench's figure, not a test's).
        assert combined_rate(times) <= paced[name].limit / paced[name].seconds * (1 + 1e-5)

    # The pause set by this process pushed both others' next slot a minute out.
    assert len(result.pause_probes) == 2
    assert all(probe.wait > 30 for probe in result.pause_probes)


def test_most_in_window_counts_a_half_open_window() -> None:
    assert most_in_window([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], 1.0) == 5
    assert most_in_window([0.0, 0.1, 0.2, 0.9999], 1.0) == 4
    assert most_in_window([], 1.0) == 0


# ---- one process, the rule on an injected clock, every backend ----------------------------------


class Clock:
    """Seconds that move only when a test (or the limiter's injected sleep) moves them."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


Build = Callable[[dict[str, Rate], Clock], PacedLimiter]


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def build(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Build]:
    kind = request.param
    made: list[PacedLimiter] = []
    prefix = f"t_{uuid.uuid4().hex[:10]}"

    def make(rates: dict[str, Rate], clock: Clock) -> PacedLimiter:
        limiter: PacedLimiter
        if kind == "memory":
            limiter = InMemoryLimiter(rates, clock=clock, sleep=clock.sleep)
        elif kind == "sqlite":
            limiter = SQLiteLimiter(
                tmp_path / "l.sqlite", rates, table_prefix=prefix, clock=clock, sleep=clock.sleep
            )
        elif kind == "redis":
            url, key_prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
            limiter = RedisLimiter(url, rates, key_prefix=key_prefix, clock=clock, sleep=clock.sleep)
        else:
            url = request.getfixturevalue("postgres_url")
            limiter = PostgresLimiter(url, rates, table_prefix=prefix, clock=clock, sleep=clock.sleep)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        if isinstance(limiter, SQLiteLimiter | RedisLimiter | PostgresLimiter):
            limiter.close()
    if kind == "postgres" and made:
        cleanup(Backend("postgres", request.getfixturevalue("postgres_url"), prefix))


FIVE = {"five": Rate(5)}  # a grant every 0.2 s


def test_acquire_sleeps_exactly_until_its_slot(build: Build) -> None:
    clock = Clock()
    limiter = build(FIVE, clock)
    assert isinstance(limiter, RateLimiter)
    for _ in range(4):
        limiter.acquire("five")
    assert clock.slept == pytest.approx([0.2, 0.2, 0.2])  # the first was free; no polling
    # Threads that reserve at once are given successive slots, each one interval on.
    slots = [limiter.reserve("five") for _ in range(3)]
    assert [s.at for s in slots] == pytest.approx([1_000.8, 1_001.0, 1_001.2])
    assert [s.wait for s in slots] == pytest.approx([0.2, 0.4, 0.6])


def test_a_429_without_retry_after_halves_the_rate_once_per_window_and_backs_off(build: Build) -> None:
    clock = Clock()
    limiter = build(FIVE, clock)
    limiter.reserve("five")  # next free at 1000.2
    limiter.slow_down("five")
    # Rate halved: one interval of the lowered rate (0.4 s) from now, not a whole second.
    assert limiter.paused_for("five") == pytest.approx(0.4)
    # Requests in flight are refused together: a second 429 in the same window cuts no further.
    limiter.slow_down("five")
    first, second = limiter.reserve("five"), limiter.reserve("five")
    assert (first.at, second.at) == pytest.approx((1_000.4, 1_000.8))
    clock.now = 1_001.0  # a window later, another 429: the rate halves again (to about a quarter)
    limiter.slow_down("five")
    slot = limiter.reserve("five")
    spacing = limiter.reserve("five").at - slot.at
    assert spacing == pytest.approx(0.2 / ((0.5 + 0.1) * 0.5))
    # Never below the floor, however many 429s.
    for step in range(30):
        clock.now = 1_002.0 + step
        limiter.slow_down("five")
    slot = limiter.reserve("five")
    assert limiter.reserve("five").at - slot.at <= 0.2 / MIN_FACTOR + 1e-9


def test_the_rate_recovers_additively_to_the_full_share(build: Build) -> None:
    clock = Clock()
    limiter = build(FIVE, clock)
    limiter.slow_down("five")  # factor 0.5 at t=1000

    def spacing_at(now: float) -> float:
        clock.now = now
        first = limiter.reserve("five")
        return limiter.reserve("five").at - first.at

    assert spacing_at(1_001.0) == pytest.approx(0.2 / 0.6)  # +0.1 of the full rate per window
    assert spacing_at(1_003.0) == pytest.approx(0.2 / 0.8)
    assert spacing_at(1_010.0) == pytest.approx(0.2)  # back to the full rate, and no further


def test_retry_after_is_honoured_capped_and_never_shortens_a_pause(build: Build) -> None:
    clock = Clock()
    limiter = build(FIVE | {"b": Rate(100)}, clock)
    limiter.slow_down("five", 3.0)
    assert limiter.reserve("five").at == pytest.approx(1_003.0)
    limiter.slow_down("five", 0.1)  # a later, shorter Retry-After does not bring the slot forward
    assert limiter.paused_for("five") == pytest.approx(3.2)  # 1003.0 taken; a lone 429 cut no rate
    limiter.slow_down("b", 86_400)  # one bad header does not park every sender for a day
    assert limiter.paused_for("b") == pytest.approx(MAX_PAUSE_SECONDS)
    assert limiter.paused_for("c") == 0


def test_names_without_a_rate_pass_at_once_but_honour_pauses(build: Build) -> None:
    clock = Clock()
    limiter = build(FIVE, clock)
    assert [limiter.reserve("unrated").wait for _ in range(3)] == [0, 0, 0]
    limiter.slow_down("unrated")
    assert limiter.reserve("unrated").wait == pytest.approx(UNRATED_PAUSE_SECONDS)
    limiter.slow_down("unrated", 5.0)
    assert limiter.reserve("unrated").wait == pytest.approx(5.0)


def test_processes_share_the_state_of_a_backend(build: Build) -> None:
    clock = Clock()
    one, other = build(FIVE, clock), build(FIVE, clock)
    if isinstance(one, InMemoryLimiter):
        pytest.skip("the in-memory limiter is one process's own")
    one.reserve("five")
    one.slow_down("five", 2.0)
    assert other.reserve("five").at == pytest.approx(1_002.0)
    clock.now = 1_003.0  # another 429 soon after: the rate is cut, for every process
    one.slow_down("five", 1.0)
    assert other.reserve("five").at == pytest.approx(1_004.0)
    assert one.reserve("five").at == pytest.approx(1_004.0 + 0.4)  # the cut rate is shared too


def test_a_lone_429_with_retry_after_pauses_and_a_repeated_one_cuts_the_rate(build: Build) -> None:
    clock = Clock()
    limiter = build(FIVE, clock)
    limiter.slow_down("five", 1.0)
    first, second = limiter.reserve("five"), limiter.reserve("five")
    assert (first.at, second.at) == pytest.approx((1_001.0, 1_001.2))  # paused, at the full rate
    limiter.slow_down("five", 1.0)  # in flight, refused with it: the same burst, nothing more
    clock.now = 1_002.0 + 0.5 * REPEAT_WINDOWS  # a second 429 within the repeat horizon
    limiter.slow_down("five", 1.0)
    third, fourth = limiter.reserve("five"), limiter.reserve("five")
    assert third.at == pytest.approx(clock.now + 1.0) and fourth.at - third.at == pytest.approx(0.4)
    clock.now += REPEAT_WINDOWS + 1.0  # long after: a lone one again, the rate as it has recovered
    limiter.slow_down("five", 1.0)
    fifth, sixth = limiter.reserve("five"), limiter.reserve("five")
    assert sixth.at - fifth.at == pytest.approx(0.2)


def test_sqlalchemy_urls_become_libpq_urls() -> None:
    assert postgres_conninfo("postgresql+psycopg://u@h:5432/db") == "postgresql://u@h:5432/db"
    assert postgres_conninfo("postgres://u@h/db") == "postgresql://u@h/db"


def test_backends_are_the_classes_they_say(tmp_path: Path) -> None:
    with Backend("sqlite", str(tmp_path / "x" / "l.sqlite"), "p").limiter({}) as limiter:
        assert isinstance(limiter, SQLiteLimiter)
    assert (tmp_path / "x" / "l.sqlite").exists()
    assert not issubclass(RedisLimiter, PostgresLimiter)
    assert PAUSED_NAME not in ITERABLE_RATE_LIMITS
