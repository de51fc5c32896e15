"""Benchmark of the Iterable client: its own overhead, its requests/s, and bulkUpdate users/s under limits.

    uv run python -m dev.bench.iterable_client [--seconds 20] [--threads 8]

Figures (each measured for ``--seconds``):
1. overhead: rows/s through batches() + serialization + BulkResult, with an in-process transport;
2. requests/s against the stand-in (its own process, ``--no-limits``), no limiter on our side;
3. users/bulkUpdate users/s with Iterable's 5 requests/s on both sides (the stand-in enforces it, our
   limiter paces it), 1000 users per request: the ceiling is 5,000 users/s.
Prints a table and, as the last line, the figures as JSON. It prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from dev.bench.common import iterable_standin
from iterable_recipes.clients.batching import batches
from iterable_recipes.clients.iterable import DEFAULT_RATE_SHARE, IterableClient, iterable_limiter
from iterable_recipes.clients.retry import RetryPolicy

KEY = "sandbox-key"


@contextmanager
def stand_in(limits: bool) -> Iterator[str]:
    """Run ``python -m dev.standins.iterable`` in its own process; yield its base URL."""
    with iterable_standin(limits) as spawned:
        yield spawned.url


def rows(start: int, count: int) -> list[dict[str, Any]]:
    """Synthetic profile rows shaped like the Snowflake sync's (about 200 bytes each)."""
    return [
        {
            "email": f"bench{i}@example.com",
            "dataFields": {
                "namespaceId": i,
                "plan": "free",
                "trialStart": "2026-01-01 00:00:00 +00:00",
                "seats": i % 50,
                "isPaid": False,
                "company": "Example Company Inc.",
            },
        }
        for i in range(start, start + count)
    ]


def run_threads(threads: int, seconds: float, work: Callable[[int], int]) -> tuple[int, float, list[float]]:
    """Call ``work(thread)`` in a loop on each thread for ``seconds``; return (units, elapsed, latencies)."""
    stop = time.monotonic() + seconds
    totals = [0] * threads
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def loop(n: int) -> None:
        while time.monotonic() < stop:
            began = time.perf_counter()
            totals[n] += work(n)
            latencies[n].append(time.perf_counter() - began)

    began = time.monotonic()
    pool = [threading.Thread(target=loop, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(totals), time.monotonic() - began, [x for per in latencies for x in per]


def overhead(seconds: float) -> dict[str, float]:
    """Rows/s the client handles with the network taken out (batching, JSON, answer parsing)."""
    answer = json.dumps({"successCount": 1000, "failCount": 0}).encode()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=answer))
    data = rows(0, 10_000)
    done = 0
    with IterableClient(KEY, transport=transport) as client:
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            for batch in batches(data):
                done += client.bulk_update_users(batch).accepted_count
        elapsed = time.monotonic() - began
    return {"rows_per_s": done / elapsed, "seconds": elapsed}


def requests_per_second(url: str, seconds: float, threads: int) -> dict[str, float]:
    """Small requests (bulkUpdate of one user) as fast as the client and the stand-in go."""
    counter = iter(range(10**9))
    lock = threading.Lock()
    with IterableClient(KEY, base_url=url, retry=RetryPolicy(attempts=3, base_delay=0.01)) as client:

        def one(_: int) -> int:
            with lock:
                i = next(counter)
            client.bulk_update_users(rows(i, 1))
            return 1

        done, elapsed, latencies = run_threads(threads, seconds, one)
    latencies.sort()
    return {
        "requests_per_s": done / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "threads": threads,
        "seconds": elapsed,
    }


def bulk_users_per_second(url: str, seconds: float, threads: int, share: float) -> dict[str, float]:
    """users/bulkUpdate of 1000 users per request under Iterable's 5 requests/s, paced by our limiter."""
    counter = iter(range(0, 10**9, 1000))
    lock = threading.Lock()
    policy = RetryPolicy(attempts=5, base_delay=0.2, max_delay=2.0)
    with IterableClient(KEY, base_url=url, limiter=iterable_limiter(share), retry=policy) as client:

        def one(_: int) -> int:
            with lock:
                start = next(counter)
            return client.bulk_update_users(rows(start, 1000)).accepted_count

        done, elapsed, latencies = run_threads(threads, seconds, one)
    stats = httpx.get(f"{url}/_sandbox/stats", timeout=10).json()
    answered = stats["requests"].get("users/bulkUpdate", {})
    return {
        "users_per_s": done / elapsed,
        "ceiling_users_per_s": 5000.0,
        "requests_200": float(answered.get("200", 0)),
        "requests_429": float(answered.get("429", 0)),
        "p50_ms": statistics.median(latencies) * 1000,
        "threads": threads,
        "share": share,
        "seconds": elapsed,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the three measurements and print them."""
    parser = argparse.ArgumentParser(
        prog="python -m dev.bench.iterable_client",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measurement")
    parser.add_argument("--threads", type=int, default=8, help="threads for the requests/s figure")
    parser.add_argument(
        "--share", type=float, default=DEFAULT_RATE_SHARE, help="share of each limit to pace at (0.9 = 90%%)"
    )
    args = parser.parse_args(argv)

    figures: dict[str, dict[str, float]] = {"overhead": overhead(args.seconds)}
    with stand_in(limits=False) as url:
        figures["requests_limits_off"] = requests_per_second(url, args.seconds, args.threads)
    with stand_in(limits=True) as url:
        figures["bulk_update_limited"] = bulk_users_per_second(url, args.seconds, threads=4, share=args.share)

    o, r, b = figures["overhead"], figures["requests_limits_off"], figures["bulk_update_limited"]
    print(f"{'measurement':<48}{'figure':>16}")
    print(f"{'client overhead (no network), rows/s':<48}{o['rows_per_s']:>16,.0f}")
    print(f"{'requests/s, limits off, ' + str(args.threads) + ' threads':<48}{r['requests_per_s']:>16,.0f}")
    print(f"{'  latency p50 / p99, ms':<48}{r['p50_ms']:>7.1f} / {r['p99_ms']:<6.1f}")
    print(f"{'bulkUpdate users/s at 5 req/s (ceiling 5,000)':<48}{b['users_per_s']:>16,.0f}")
    print(f"{'  bulkUpdate answers 200 / 429':<48}{b['requests_200']:>9.0f} / {b['requests_429']:<5.0f}")
    print(json.dumps({"bench": "iterable_client", "seconds": args.seconds, **figures}, sort_keys=True))


if __name__ == "__main__":
    main()
