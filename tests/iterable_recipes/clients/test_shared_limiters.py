"""The shared limiters hold a limit across real processes, on a SQLite file, Redis and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dev.bench.limiters import Backend, cleanup, max_excess, run_processes
from iterable_recipes.clients.limiter import Rate, RateLimiter
from iterable_recipes.clients.shared_limiters import (
    PostgresLimiter,
    RedisLimiter,
    SharedLimiter,
    SQLiteLimiter,
    burst_of,
    postgres_conninfo,
    pyrate_rates,
)

RATES = {"five": Rate(5), "hundred": Rate(100)}
SECONDS = 2.5
PAUSE_SECONDS = 1.0
# Times are read after acquire() returns, not when the bucket decided; a process descheduled in
# between shifts its reading. Allow 50 ms of that per span (0.25 request at 5/s, 5 at 100/s).
JITTER_SECONDS = 0.05
# Redis measures pauses in whole milliseconds.
CLOCK_GRANULARITY = 0.005


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


def test_two_processes_together_stay_within_limit_and_burst(backend: Backend) -> None:
    result = run_processes(backend, RATES, SECONDS, pause_seconds=PAUSE_SECONDS)

    assert len(result.per_process) == 2
    for counts in result.per_process:
        assert counts["five"] > 0 and counts["hundred"] > 0, "both processes must send"
    for name, rate in RATES.items():
        times = result.times[name]
        limit = rate.limit / rate.seconds
        bound = burst_of(rate) + limit * JITTER_SECONDS
        assert max_excess(times, limit) <= bound, (
            f"{name}: {len(times)} acquisitions exceed {limit}/s x span + {burst_of(rate)}"
        )

    # The pause set by this process held back both others.
    assert result.pause_set_at is not None
    assert len(result.pause_probes) == 2
    for seen, returned in result.pause_probes:
        assert seen > 0
        assert returned >= result.pause_set_at + PAUSE_SECONDS - CLOCK_GRANULARITY


def test_max_excess_catches_an_unshared_limit() -> None:
    # Two processes each sending 5/s on their own: 10 per second where 5 are allowed.
    times = sorted([i / 5 for i in range(15)] + [i / 5 + 0.01 for i in range(15)])
    assert max_excess(times, 5) > burst_of(Rate(5)) + 5
    assert max_excess([i / 5 for i in range(15)], 5) <= 1


# ---- one process: pauses, unrated names, rates --------------------------------------------------


def build(backend: Backend) -> SharedLimiter:
    return backend.limiter({"a": Rate(100), "b": Rate(100)})


def test_pause_never_shortens_and_stays_on_its_name(backend: Backend) -> None:
    with build(backend) as limiter:
        assert isinstance(limiter, RateLimiter)
        limiter.slow_down("a", 30)
        limiter.slow_down("a", 0.1)
        limiter.slow_down("a", 0)
        assert limiter.paused_for("a") > 20
        assert limiter.paused_for("b") == 0
        limiter.acquire("b")
        limiter.acquire("not-rated")
        with build(backend) as other:
            assert other.paused_for("a") > 20


def test_rates_of_the_library() -> None:
    assert [(r.limit, r.interval) for r in pyrate_rates(Rate(100))] == [(100, 1000), (10, 100)]
    # A small limit is also spread out: bulkUpdate's five a second leave 200 ms apart, not at once.
    assert [(r.limit, r.interval) for r in pyrate_rates(Rate(5))] == [(5, 1000), (1, 200)]
    assert [(r.limit, r.interval) for r in pyrate_rates(Rate(15, 60))] == [(15, 60000)]
    assert burst_of(Rate(2000)) == 200 and burst_of(Rate(5)) == 5


def test_sqlalchemy_urls_become_libpq_urls() -> None:
    assert postgres_conninfo("postgresql+psycopg://u@h:5432/db") == "postgresql://u@h:5432/db"
    assert postgres_conninfo("postgres://u@h/db") == "postgresql://u@h/db"


def test_backends_are_the_classes_they_say(tmp_path: Path) -> None:
    with Backend("sqlite", str(tmp_path / "x" / "l.sqlite"), "p").limiter({}) as limiter:
        assert isinstance(limiter, SQLiteLimiter)
    assert (tmp_path / "x" / "l.sqlite").exists()
    assert not issubclass(RedisLimiter, PostgresLimiter)
