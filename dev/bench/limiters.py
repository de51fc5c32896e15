"""How closely the shared limiters reach Iterable's limits when two processes send at once (no asserts).

    uv run python -m dev.bench.limiters [--seconds 10] [--backends sqlite,redis,postgres]
        [--endpoints users/bulkUpdate,events/trackBulk,users/getByEmail] [--share 1.0]

Each case starts two spawned processes that call ``reserve`` for one endpoint, sleep until the slot
and reserve again (what ``acquire`` does), with the rates the clients use (``paced_rates``: the share
and the timing margin of the settings' defaults). It reports the granted rate as a share of Iterable's
ceiling for the endpoint and of the paced rate the limiter is set to hold, in the limiter's own clock
(the slot times the backend granted) and in the senders' wall clock, and the most grants seen in any
one window of the endpoint (the limit is the ceiling's N). The last line is JSON. Redis and PostgreSQL
come from TEST_REDIS_URL / TEST_POSTGRES_URL (defaults: the machine's own); their keys and tables are
removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from iterable_recipes.clients.iterable import DEFAULT_RATE_SHARE, ITERABLE_RATE_LIMITS, paced_rates
from iterable_recipes.clients.limiter import Rate, Slot
from iterable_recipes.clients.shared_limiters import (
    PostgresLimiter,
    RedisLimiter,
    SharedLimiter,
    SQLiteLimiter,
)

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PAUSED_NAME = "paused"


@dataclass(frozen=True)
class Backend:
    """Where the processes' limiter lives: ``kind`` is sqlite, redis or postgres; ``target`` a path or URL."""

    kind: str
    target: str
    prefix: str

    def limiter(self, rates: Mapping[str, Rate]) -> SharedLimiter:
        """A limiter on this backend (each process builds its own)."""
        if self.kind == "sqlite":
            return SQLiteLimiter(self.target, rates, table_prefix=self.prefix)
        if self.kind == "redis":
            return RedisLimiter(self.target, rates, key_prefix=self.prefix)
        if self.kind == "postgres":
            return PostgresLimiter(self.target, rates, table_prefix=self.prefix)
        raise ValueError(f"unknown backend {self.kind!r}")


@dataclass
class RunResult:
    """Grants per name from every process: the slot's time in the limiter's own clock, and the wall
    time the sender woke for it; and the pause probe."""

    times: dict[str, list[float]] = field(default_factory=dict)
    woke: dict[str, list[float]] = field(default_factory=dict)
    # How many grants of each name every process had.
    per_process: list[dict[str, int]] = field(default_factory=list)
    # The slot each process was given for PAUSED_NAME after the pause was set.
    pause_probes: list[Slot] = field(default_factory=list)


def _send(limiter: SharedLimiter, name: str, until: float, out: list[tuple[float, float]]) -> None:
    while time.time() < until:
        slot = limiter.reserve(name)
        if slot.wait > 0:
            time.sleep(slot.wait)
        out.append((slot.at, time.time()))


def _worker(
    backend: Backend,
    rates: dict[str, Rate],
    seconds: float,
    ready: Any,
    go: Any,
    go_pause: Any,
    results: Any,
) -> None:
    limiter = backend.limiter(rates)
    try:
        ready.put(os.getpid())
        go.wait()
        until = time.time() + seconds
        grants: dict[str, list[tuple[float, float]]] = {name: [] for name in rates}
        threads = [threading.Thread(target=_send, args=(limiter, n, until, grants[n])) for n in rates]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results.put(("times", grants))
        if go_pause.wait(timeout=30):
            # Reserved, not waited for: the probe reads the slot the pause pushed it to.
            results.put(("pause", limiter.reserve(PAUSED_NAME)))
    finally:
        limiter.close()


def run_processes(
    backend: Backend,
    rates: Mapping[str, Rate],
    seconds: float,
    *,
    processes: int = 2,
    pause_seconds: float = 0.0,
) -> RunResult:
    """Run ``processes`` spawned senders for ``seconds`` on ``backend``; optionally probe a pause.

    With ``pause_seconds`` > 0, after the senders finish this process calls
    ``slow_down(PAUSED_NAME, pause_seconds)`` and each sender then reserves that name once.
    """
    ctx = mp.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    go, go_pause = ctx.Event(), ctx.Event()
    workers = [
        ctx.Process(target=_worker, args=(backend, dict(rates), seconds, ready, go, go_pause, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    result = RunResult(times={name: [] for name in rates}, woke={name: [] for name in rates})
    try:
        for _ in workers:
            ready.get(timeout=60)
        go.set()
        for _ in workers:
            kind, grants = results.get(timeout=seconds + 60)
            assert kind == "times"
            for name, pairs in grants.items():
                result.times[name].extend(at for at, _ in pairs)
                result.woke[name].extend(woke for _, woke in pairs)
            result.per_process.append({name: len(pairs) for name, pairs in grants.items()})
        if pause_seconds > 0:
            with backend.limiter({}) as setter:
                setter.slow_down(PAUSED_NAME, pause_seconds)
            go_pause.set()
            for _ in workers:
                kind, probe = results.get(timeout=60)
                assert kind == "pause"
                result.pause_probes.append(probe)
        else:
            go_pause.set()
        for worker in workers:
            worker.join(timeout=30)
    except queue.Empty as exc:
        raise RuntimeError("a sender process did not report in time") from exc
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join()
    for stamps in (*result.times.values(), *result.woke.values()):
        stamps.sort()
    return result


def most_in_window(times: Sequence[float], window: float) -> int:
    """The most of sorted ``times`` inside any half-open window ``[t, t + window)``."""
    most, first = 0, 0
    for last, stamp in enumerate(times):
        while times[first] <= stamp - window:
            first += 1
        most = max(most, last - first + 1)
    return most


def combined_rate(times: Sequence[float]) -> float:
    """Grants per second between the first and the last."""
    if len(times) < 2:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def cleanup(backend: Backend) -> None:
    """Remove the backend's keys or tables left by a run."""
    if backend.kind == "redis":
        import redis

        client = redis.Redis.from_url(backend.target)
        keys = list(client.scan_iter(f"{backend.prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
    elif backend.kind == "postgres":
        import psycopg

        from iterable_recipes.clients.shared_limiters import postgres_conninfo

        with psycopg.connect(postgres_conninfo(backend.target), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE %s OR tablename LIKE %s",
                (f"{backend.prefix}%", f"ratelimit___{backend.prefix}%"),
            ).fetchall()
            for (table,) in rows:
                conn.execute(f'DROP TABLE IF EXISTS "{table}"')


def main(argv: Sequence[str] | None = None) -> None:
    """Run every case and print a table, then one JSON line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backends", default="sqlite,redis,postgres")
    parser.add_argument("--endpoints", default="users/bulkUpdate,events/trackBulk,users/getByEmail")
    parser.add_argument("--share", type=float, default=DEFAULT_RATE_SHARE)
    args = parser.parse_args(argv)
    paced = paced_rates(args.share)
    rows: list[dict[str, Any]] = []
    print(f"two processes, {args.seconds:g} s per case, share {args.share:g}")
    header = ("backend", "endpoint", "ceiling", "granted", "of ceiling", "woken/s", "most in window")
    print("{:<9} {:<17} {:>9} {:>8} {:>10} {:>8} {:>14}".format(*header))
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.backends.split(","):
            for endpoint in args.endpoints.split(","):
                prefix = f"bench_{uuid.uuid4().hex[:8]}"
                targets = {"sqlite": f"{tmp}/{prefix}.sqlite", "redis": REDIS_URL, "postgres": POSTGRES_URL}
                backend = Backend(kind, targets[kind], prefix)
                try:
                    result = run_processes(backend, {endpoint: paced[endpoint]}, args.seconds)
                finally:
                    cleanup(backend)
                ceiling = ITERABLE_RATE_LIMITS[endpoint]
                per_second = ceiling.limit / ceiling.seconds
                times = result.times[endpoint]
                rate = combined_rate(times)
                row = {
                    "backend": kind,
                    "endpoint": endpoint,
                    "ceiling_per_s": per_second,
                    "granted": len(times),
                    "rate": round(rate, 3),
                    "share_of_ceiling": round(rate / per_second, 4),
                    # Of the rate the limiter is set to hold (the ceiling less the share and margin).
                    "share_of_paced": round(rate * paced[endpoint].seconds / paced[endpoint].limit, 4),
                    "woken_rate": round(combined_rate(result.woke[endpoint]), 3),
                    "most_in_window": most_in_window(times, ceiling.seconds),
                    "limit_in_window": ceiling.limit,
                }
                rows.append(row)
                print(
                    f"{kind:<9} {endpoint:<17} {per_second:>7g}/s {row['rate']:>8.2f} "
                    f"{row['share_of_ceiling']:>10.1%} {row['woken_rate']:>8.2f} "
                    f"{row['most_in_window']:>8} of {ceiling.limit:<3}"
                )
    print(json.dumps({"bench": "limiters", "processes": 2, "seconds": args.seconds, "cases": rows}))


if __name__ == "__main__":
    main()
