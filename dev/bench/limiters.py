"""How closely the shared limiters hold a limit when two processes send at once (figures, no asserts).

    uv run python -m dev.bench.limiters [--seconds 10] [--backends sqlite,redis,postgres]

Each case starts two spawned processes that call ``acquire`` as fast as it returns for one name,
and reports the combined rate over the run against the limit, and the worst excess over any
span: max(count - limit x span), which the limiter keeps at or below the bucket's burst. The last
line is JSON. Redis and PostgreSQL come from TEST_REDIS_URL / TEST_POSTGRES_URL (defaults: the
machine's own); their keys and tables are removed afterwards.
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

from iterable_recipes.clients.limiter import Rate
from iterable_recipes.clients.shared_limiters import (
    PostgresLimiter,
    RedisLimiter,
    SharedLimiter,
    SQLiteLimiter,
    burst_of,
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
    """Acquisition times (wall clock, seconds) per name from every process, and the pause probe."""

    times: dict[str, list[float]] = field(default_factory=dict)
    # How many acquisitions of each name every process made.
    per_process: list[dict[str, int]] = field(default_factory=list)
    pause_set_at: float | None = None
    pause_seconds: float = 0.0
    # (paused_for seen by the process before acquiring, wall time its acquire returned), per process.
    pause_probes: list[tuple[float, float]] = field(default_factory=list)


def _send(limiter: SharedLimiter, name: str, until: float, out: list[float]) -> None:
    while time.time() < until:
        limiter.acquire(name)
        out.append(time.time())


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
        times: dict[str, list[float]] = {name: [] for name in rates}
        threads = [threading.Thread(target=_send, args=(limiter, n, until, times[n])) for n in rates]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results.put(("times", times))
        if go_pause.wait(timeout=30):
            seen = limiter.paused_for(PAUSED_NAME)
            limiter.acquire(PAUSED_NAME)
            results.put(("pause", (seen, time.time())))
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
    ``slow_down(PAUSED_NAME, pause_seconds)`` and each sender then acquires that name once.
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
    result = RunResult(times={name: [] for name in rates}, pause_seconds=pause_seconds)
    try:
        for _ in workers:
            ready.get(timeout=60)
        go.set()
        for _ in workers:
            kind, times = results.get(timeout=seconds + 60)
            assert kind == "times"
            for name, stamps in times.items():
                result.times[name].extend(stamps)
            result.per_process.append({name: len(stamps) for name, stamps in times.items()})
        if pause_seconds > 0:
            with backend.limiter({}) as setter:
                result.pause_set_at = time.time()
                setter.slow_down(PAUSED_NAME, pause_seconds)
            go_pause.set()
            for _ in workers:
                kind, probe = results.get(timeout=pause_seconds + 60)
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
    for stamps in result.times.values():
        stamps.sort()
    return result


def max_excess(times: Sequence[float], limit_per_second: float) -> float:
    """The largest ``count - limit x span`` over every span [t_i, t_j] of sorted ``times``.

    A limiter holding ``limit`` with burst ``b`` keeps this at or below ``b``: that is the bound.
    """
    # count(i..j) - limit*(t_j - t_i) = a_j - a_i + 1 with a_k = k - limit*t_k; keep the running min.
    worst = 0.0
    lowest = float("inf")
    for k, stamp in enumerate(times):
        a_k = k - limit_per_second * stamp
        lowest = min(lowest, a_k)
        worst = max(worst, a_k - lowest + 1)
    return worst


def combined_rate(times: Sequence[float]) -> float:
    """Acquisitions per second between the first and the last."""
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backends", default="sqlite,redis,postgres")
    parser.add_argument("--limits", default="5,100")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    print(f"two processes, {args.seconds:g} s per case")
    header = ("backend", "limit/s", "sent", "rate/s", "of limit", "excess", "burst")
    print("{:<9} {:>7} {:>6} {:>8} {:>8} {:>7} {:>6}".format(*header))
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.backends.split(","):
            for limit in (int(x) for x in args.limits.split(",")):
                prefix = f"bench_{uuid.uuid4().hex[:8]}"
                targets = {"sqlite": f"{tmp}/{prefix}.sqlite", "redis": REDIS_URL, "postgres": POSTGRES_URL}
                target = targets[kind]
                backend = Backend(kind, target, prefix)
                rate = Rate(limit)
                try:
                    times = run_processes(backend, {"bench": rate}, args.seconds).times["bench"]
                finally:
                    cleanup(backend)
                row = {
                    "backend": kind,
                    "limit": limit,
                    "sent": len(times),
                    "rate": round(combined_rate(times), 2),
                    "excess": round(max_excess(times, limit), 2),
                    "burst": burst_of(rate),
                }
                rows.append(row)
                print(
                    f"{kind:<9} {limit:>7} {row['sent']:>6} {row['rate']:>8.2f} "
                    f"{row['rate'] / limit:>8.1%} {row['excess']:>7.2f} {row['burst']:>6}"
                )
    print(json.dumps({"bench": "limiters", "processes": 2, "seconds": args.seconds, "cases": rows}))


if __name__ == "__main__":
    main()
