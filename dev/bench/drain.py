"""Benchmark of Recipe 1's drain: a backlog of CustomersDot events delivered to Iterable, in events/s.

    uv run python -m dev.bench.drain [--events 100000] [--batch-size 1000] [--in-flight 4] [--raw]

The backlog is stored straight into a fresh SQLite inbox (Inbox.add_many, synthetic example.com
people); the stand-in Iterable runs in its own process with Iterable's limits on; the drain flow runs
against a temporary Prefect server (prefect_test_harness). Every event also updates its profile, so
users/bulkUpdate (5 requests/s of 1000 users) caps the drain at 5,000 events/s; trackBulk allows 10/s.
With ``--raw`` the same bodies are also sent without inbox or Prefect (client and limiter only), to
show what the flow's own overhead costs. Prints a table and, last, the figures as JSON. It asserts
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import httpx

from dev.bench.iterable_client import KEY, stand_in
from iterable_recipes.clients.iterable import ITERABLE_RATE_LIMITS, IterableClient
from iterable_recipes.clients.limiter import InMemoryLimiter
from iterable_recipes.store.inbox import Inbox, NewItem
from iterable_recipes.store.migrate import migrate

CEILING_EVENTS_PER_S = 5000  # users/bulkUpdate: 5 requests/s x 1000 users, one profile per event
KINDS = ("saas_trial_started", "namespace_user_invited", "free_registration")


def backlog(start: int, stop: int) -> list[NewItem]:
    """Valid CustomersDot events ``start`` .. ``stop`` for synthetic example.com people, all forwarded."""
    items = []
    for i in range(start, stop):
        kind = KINDS[i % len(KINDS)]
        data: dict[str, Any] = {"company": "Example Company Inc.", "firstName": "Ada", "country": "NL"}
        if kind == "free_registration":
            data["registration_kind"] = "company"
        if kind == "saas_trial_started":
            data["latest_trial_start_date"] = "2026-11-20"
        body = {
            "version": "1",
            "id": f"bench-{i}",
            "type": kind,
            "occurred_at": "2026-11-20T10:00:00+00:00",
            "person": {"email": f"bench{i}@example.com", "user_id": str(i)},
            "data": data,
        }
        items.append(NewItem("customersdot", f"bench-{i}", kind, body))
    return items


def fill_inbox(url: str, count: int) -> dict[str, float]:
    """Migrate a fresh inbox at ``url`` and store the backlog; returns the insert figures."""
    migrate(url)
    inbox = Inbox(url)
    began = time.monotonic()
    for start in range(0, count, 10_000):
        inbox.add_many(backlog(start, min(count, start + 10_000)))
    elapsed = time.monotonic() - began
    inbox.dispose()
    return {"events": count, "insert_seconds": elapsed, "insert_events_per_s": count / elapsed}


def stand_in_stats(url: str) -> dict[str, Any]:
    """The stand-in's counters."""
    return dict(httpx.get(f"{url}/_sandbox/stats", timeout=30).json())


def run_flow(url: str, database_url: str, workdir: Path, batch_size: int, in_flight: int) -> dict[str, Any]:
    """Drain the backlog with the flow under a temporary Prefect server; returns counts and timings."""
    os.environ.update(
        ITERABLE_API_KEY=KEY,
        ITERABLE_BASE_URL=url,
        RECIPES_DATABASE_URL=database_url,
        LIMITER_BACKEND="sqlite",
        LIMITER_SQLITE_PATH=str(workdir / "limiter.sqlite"),
        DRAIN_BATCH_SIZE=str(batch_size),
        DRAIN_BATCHES_IN_FLIGHT=str(in_flight),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    from prefect.testing.utilities import prefect_test_harness

    from flows.customersdot_events import customersdot_drain

    with prefect_test_harness(server_startup_timeout=120):
        began = time.monotonic()
        counts = customersdot_drain()
        elapsed = time.monotonic() - began
    return {"counts": counts, "seconds": elapsed}


def run_raw(url: str, count: int, batch_size: int) -> dict[str, float]:
    """The same bulkUpdate + trackBulk bodies straight from the client: no inbox, no Prefect."""
    limiter = InMemoryLimiter(ITERABLE_RATE_LIMITS)
    items = backlog(0, count)
    payloads = [cast(dict[str, Any], i.payload) for i in items]  # backlog() builds them as dicts
    users = [{"email": p["person"]["email"], "dataFields": p["data"]} for p in payloads]
    events = [
        {"email": p["person"]["email"], "eventName": "SaaS Trials", "id": f"raw-{i.source_id}"}
        for i, p in zip(items, payloads, strict=True)
    ]
    with IterableClient(KEY, base_url=url, limiter=limiter) as client:

        def one(start: int) -> int:
            client.bulk_update_users(users[start : start + batch_size])
            return client.track_events(events[start : start + batch_size]).accepted_count

        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as pool:
            done = sum(pool.map(one, range(0, count, batch_size)))
        elapsed = time.monotonic() - began
    return {"events": float(done), "seconds": elapsed, "events_per_s": done / elapsed}


def main(argv: list[str] | None = None) -> None:
    """Fill the inbox, drain it through the flow (and raw, when asked), print the figures."""
    parser = argparse.ArgumentParser(
        prog="python -m dev.bench.drain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=100_000, help="backlog size")
    parser.add_argument("--batch-size", type=int, default=1000, help="items per claimed batch")
    parser.add_argument(
        "--in-flight", type=int, default=4, help="batches in flight (DRAIN_BATCHES_IN_FLIGHT)"
    )
    parser.add_argument("--raw", action="store_true", help="also measure the client alone")
    args = parser.parse_args(argv)

    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
        workdir = Path(tmp)
        database_url = f"sqlite:///{workdir / 'recipes.db'}"
        figures["insert"] = fill_inbox(database_url, args.events)
        with stand_in(limits=True) as url:
            flow = run_flow(url, database_url, workdir, args.batch_size, args.in_flight)
            stats = stand_in_stats(url)
        inbox = Inbox(database_url)
        left = inbox.counts().get("customersdot", {})
        inbox.dispose()
        if args.raw:
            with stand_in(limits=True) as url:
                figures["raw"] = run_raw(url, args.events, args.batch_size)

    delivered = flow["counts"]["delivered"]
    rate = delivered / flow["seconds"]
    answers = {
        endpoint: stats["requests"].get(endpoint, {}) for endpoint in ("users/bulkUpdate", "events/trackBulk")
    }
    figures.update(
        drain_events_per_s=round(rate, 1),
        drain_ceiling_events_per_s=CEILING_EVENTS_PER_S,
        drain_share_of_ceiling=round(rate / CEILING_EVENTS_PER_S, 3),
        drain_seconds=round(flow["seconds"], 2),
        events=args.events,
        delivered=delivered,
        inbox_after=left,
        stand_in_events=stats["events"],
        requests=answers,
        batch_size=args.batch_size,
        batches_in_flight=args.in_flight,
    )

    print(f"{'measurement':<52}{'figure':>16}")
    print(f"{'backlog stored (add_many), events/s':<52}{figures['insert']['insert_events_per_s']:>16,.0f}")
    print(f"{'drain flow, events delivered / s':<52}{rate:>16,.0f}")
    print(f"{'  ceiling (bulkUpdate 5/s x 1000), events/s':<52}{CEILING_EVENTS_PER_S:>16,}")
    print(f"{'  share of the ceiling':<52}{rate / CEILING_EVENTS_PER_S:>16.1%}")
    print(f"{'  delivered / backlog':<52}{f'{delivered:,} / {args.events:,}':>16}")
    for endpoint, by_status in answers.items():
        print(f"{'  ' + endpoint + ' answers':<52}{json.dumps(by_status, sort_keys=True):>16}")
    if "raw" in figures:
        print(
            f"{'client alone (no inbox, no Prefect), events/s':<52}{figures['raw']['events_per_s']:>16,.0f}"
        )
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
