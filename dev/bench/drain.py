"""Benchmark of Recipe 1's drain: a backlog of CustomersDot events delivered to Iterable, in events/s.

    uv run python -m dev.bench.drain [--events 100000] [--batch-size 1000] [--in-flight 4] [--raw]
                                     [--profile PATH]

The backlog is stored straight into a fresh SQLite inbox (Inbox.add_many, synthetic example.com
people); the stand-in Iterable runs in its own process with Iterable's limits on; the drain flow runs
in this process against a temporary Prefect server (prefect_test_harness). Every event also updates its
profile, so users/bulkUpdate (5 requests/s of 1000 users) caps the drain at 5,000 events/s; trackBulk
allows 10/s. ``drain_share`` is the drain phase's rate (first claim to the last batch settled) over
that ceiling, with the flow call end to end beside it; ``cpu_us_per_drained_event`` is this process's
own CPU clock (user + system, every thread) over the flow call per delivered event. A timeline says
where the time went: the bulkUpdate slots the limiter granted and those left idle (a 429's pause and
lowered rate), when the 429s came, and each step's cost per batch; ``--profile`` writes a cProfile of
every thread of the flow run. With ``--raw`` the same bodies are also sent without inbox or Prefect
(client and limiter only). Prints a table and, last, the figures as JSON. It asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import os
import pstats
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import httpx

from dev.bench.common import iterable_standin
from dev.bench.iterable_client import KEY, stand_in
from iterable_recipes.clients.iterable import ITERABLE_RATE_LIMITS, IterableClient
from iterable_recipes.clients.limiter import InMemoryLimiter, PacedLimiter
from iterable_recipes.clients.shared_limiters import SharedLimiter
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


def process_cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc; 0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class Timeline:
    """Where the flow's time goes, recorded in this (the flow's) process: each users/bulkUpdate slot the
    limiter granted, and each claim, prepare, delivery and settle of a batch (start and end)."""

    def __init__(self, iterable_url: str) -> None:
        self.iterable_url = iterable_url
        self.grants: list[tuple[float, float, float]] = []  # (granted at, waited, pace interval)
        self.spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.late: list[float] = []  # seconds each bulkUpdate sender woke after its slot
        self.slow_downs: list[tuple[float, str]] = []  # (when, endpoint) of each 429 the limiter was told
        self._lock = threading.Lock()

    def _span(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.spans[name].append((began, time.monotonic()))

        return timed

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Wrap the limiter's acquire and the drain's steps while the block runs."""
        import flows.customersdot_events as flow_module
        import iterable_recipes.customersdot.drain as engine

        def timed_acquire(limiter: PacedLimiter, name: str) -> None:
            began = time.monotonic()
            slot = limiter.reserve(name)
            if slot.wait > 0:
                time.sleep(slot.wait)
            if name == "users/bulkUpdate":
                done = time.monotonic()
                # How late this thread got going after its slot (the GIL, the CPU): the limiter's
                # clock is the wall clock for SQLite.
                late = time.time() - slot.at if isinstance(limiter, SharedLimiter) else 0.0
                with self._lock:
                    self.grants.append((done, done - began, limiter.pace(name).interval))
                    self.late.append(late)

        slow_down = SharedLimiter.slow_down

        def noted_slow_down(limiter: SharedLimiter, name: str, retry_after: float | None = None) -> None:
            with self._lock:
                self.slow_downs.append((time.monotonic(), name))
            slow_down(limiter, name, retry_after)

        send = httpx.Client.send

        def timed_send(client: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            if not str(request.url).startswith(self.iterable_url):
                return send(client, request, **kwargs)  # Prefect's own API calls
            began = time.monotonic()
            try:
                return send(client, request, **kwargs)
            finally:
                with self._lock:
                    name = "http " + request.url.path.removeprefix("/api/")
                    self.spans[name].append((began, time.monotonic()))

        patches = [
            (PacedLimiter, "acquire", timed_acquire),
            (httpx.Client, "send", timed_send),
            (SharedLimiter, "slow_down", noted_slow_down),
            (flow_module, "claim_batch", self._span("claim", flow_module.claim_batch)),
            (engine, "prepare", self._span("prepare", engine.prepare)),
            (engine.CustomersDotDrain, "deliver", self._span("deliver", engine.CustomersDotDrain.deliver)),
            (engine.CustomersDotDrain, "settle", self._span("settle", engine.CustomersDotDrain.settle)),
        ]
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
        for owner, name, value in patches:
            setattr(owner, name, value)
        try:
            yield
        finally:
            for owner, name, value in saved:
                setattr(owner, name, value)

    def figures(self, began: float) -> dict[str, Any]:
        """The phase's bounds, the slots left idle, and the mean cost of each step."""
        figures: dict[str, Any] = {}
        claims, delivers = self.spans.get("claim", []), self.spans.get("deliver", [])
        if claims and delivers:
            figures["first_claim_after_s"] = round(claims[0][0] - began, 3)
            figures["drain_phase_s"] = round(max(end for _, end in delivers) - claims[0][0], 3)
        grants = sorted(self.grants)
        if claims:
            figures["slowed_down_at_s"] = [
                (round(at - claims[0][0], 3), name) for at, name in sorted(self.slow_downs)
            ]
            figures["bulk_update_granted_at_s"] = [round(at - claims[0][0], 3) for at, _, _ in grants[:8]]
        if len(grants) > 1:
            interval = grants[0][2]
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(grants)]
            figures["bulk_update_grants"] = len(grants)
            figures["bulk_update_interval_s"] = round(interval, 4)
            figures["bulk_update_idle_s"] = round(sum(max(0.0, g - interval) for g in gaps), 3)
            figures["bulk_update_gaps_over_2_intervals"] = sum(1 for g in gaps if g > 2 * interval)
            figures["bulk_update_not_waited"] = sum(1 for _, waited, _ in grants[1:] if waited < 0.001)
            late = sorted(1000 * x for x in self.late)
            figures["bulk_update_woke_late_ms"] = {
                "p50": round(late[len(late) // 2], 1),
                "p90": round(late[int(len(late) * 0.9)], 1),
                "max": round(late[-1], 1),
            }
        for name, spans in sorted(self.spans.items()):
            took = sorted(1000 * (e - b) for b, e in spans)
            figures[f"{name}_ms"] = {
                "n": len(took),
                "mean": round(sum(took) / len(took), 1),
                "p50": round(took[len(took) // 2], 1),
                "p90": round(took[int(len(took) * 0.9)], 1),
                "max": round(took[-1], 1),
            }
        return figures


@contextmanager
def profiled(path: str) -> Iterator[None]:
    """cProfile (on each thread's own CPU clock, so waits cost nothing) this thread and every thread
    started in the block (the pipeline's workers), merged
    into one pstats file at ``path``."""
    profilers = [cProfile.Profile(time.thread_time)]

    def start_in_thread(frame: Any, event: str, arg: Any) -> None:
        sys.setprofile(None)
        profiler = cProfile.Profile(time.thread_time)
        profilers.append(profiler)
        profiler.enable()

    threading.setprofile(start_in_thread)
    profilers[0].enable()
    try:
        yield
    finally:
        profilers[0].disable()
        threading.setprofile(None)
        stats = pstats.Stats(profilers[0])
        for profiler in profilers[1:]:
            profiler.disable()  # only stops it when called from its own thread; the threads are done
            stats.add(profiler)
        stats.dump_stats(path)


def run_flow(
    url: str,
    stand_in_pid: int,
    database_url: str,
    workdir: Path,
    batch_size: int,
    in_flight: int,
    profile: str | None = None,
) -> dict[str, Any]:
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
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.testing.utilities import prefect_test_harness

    from flows.customersdot_events import customersdot_drain

    timeline = Timeline(url)
    with prefect_test_harness(server_startup_timeout=120), timeline.recording():
        server = SubprocessASGIServer._instances[None].server_process
        others = {"prefect_server": server.pid if server else None, "stand_in": stand_in_pid}
        others_began = {name: process_cpu_seconds(pid) for name, pid in others.items()}
        began = time.monotonic()
        cpu_began = time.process_time()
        if profile is not None:
            with profiled(profile):
                counts = customersdot_drain()
        else:
            counts = customersdot_drain()
        cpu = time.process_time() - cpu_began
        elapsed = time.monotonic() - began
        others_cpu = {
            f"{name}_cpu_seconds": round(process_cpu_seconds(pid) - others_began[name], 3)
            for name, pid in others.items()
        }
    return {
        "counts": counts,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "other_processes": others_cpu,
        "timeline": timeline.figures(began),
    }


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
    parser.add_argument("--profile", metavar="PATH", help="cProfile the flow run into PATH (pstats)")
    args = parser.parse_args(argv)

    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
        workdir = Path(tmp)
        database_url = f"sqlite:///{workdir / 'recipes.db'}"
        figures["insert"] = fill_inbox(database_url, args.events)
        with iterable_standin(limits=True) as spawned:
            url = spawned.url
            flow = run_flow(
                url, spawned.process.pid, database_url, workdir, args.batch_size, args.in_flight, args.profile
            )
            stats = stand_in_stats(url)
        inbox = Inbox(database_url)
        left = inbox.counts().get("customersdot", {})
        inbox.dispose()
        if args.raw:
            with stand_in(limits=True) as url:
                figures["raw"] = run_raw(url, args.events, args.batch_size)

    delivered = flow["counts"]["delivered"]
    timeline = flow["timeline"]
    # The drain's rate is its phase's: first claim to the last batch settled (the run's start and its
    # closing artifacts are a fixed cost per run, shown end to end beside it).
    phase = float(timeline.get("drain_phase_s") or flow["seconds"])
    # Rates as printed (0.1 event/s), and each share of the printed rate: dividing the printed figures
    # gives the printed share (a share of the unrounded rate can round the other way).
    rate, end_to_end = round(delivered / phase, 1), round(delivered / flow["seconds"], 1)
    answers = {
        endpoint: stats["requests"].get(endpoint, {}) for endpoint in ("users/bulkUpdate", "events/trackBulk")
    }
    figures.update(
        drain_share=round(rate / CEILING_EVENTS_PER_S, 3),
        cpu_us_per_drained_event=round(1e6 * flow["cpu_seconds"] / max(1, delivered), 1),
        drain_events_per_s=rate,
        drain_ceiling_events_per_s=CEILING_EVENTS_PER_S,
        drain_phase_seconds=round(phase, 3),
        drain_events_per_s_end_to_end=end_to_end,
        drain_share_end_to_end=round(end_to_end / CEILING_EVENTS_PER_S, 3),
        drain_seconds=round(flow["seconds"], 2),
        drain_cpu_seconds=round(flow["cpu_seconds"], 3),
        bulk_update_429=int(answers["users/bulkUpdate"].get("429", 0)),
        events=args.events,
        delivered=delivered,
        inbox_after=left,
        stand_in_events=stats["events"],
        requests=answers,
        batch_size=args.batch_size,
        batches_in_flight=args.in_flight,
        other_processes=flow["other_processes"],
        timeline=timeline,
    )

    rows: list[tuple[str, Any]] = [
        ("backlog stored (add_many), events/s", f"{figures['insert']['insert_events_per_s']:,.0f}"),
        ("drain phase (first claim to last settle), events/s", f"{rate:,.0f}"),
        ("  ceiling (bulkUpdate 5/s x 1000), events/s", f"{CEILING_EVENTS_PER_S:,}"),
        ("  share of the ceiling (drain_share)", f"{figures['drain_share']:.3f}"),
        ("  end to end (the flow call), share", f"{figures['drain_share_end_to_end']:.3f}"),
        ("  delivered / backlog", f"{delivered:,} / {args.events:,}"),
        ("drain process CPU per delivered event, us", f"{figures['cpu_us_per_drained_event']:,.1f}"),
        ("  bulkUpdate slots left idle, s", f"{timeline.get('bulk_update_idle_s', 0):.2f}"),
        *(
            (f"  {endpoint} answers", json.dumps(by_status, sort_keys=True))
            for endpoint, by_status in answers.items()
        ),
        *(
            (f"  {name.removesuffix('_cpu_seconds')} process CPU, s", f"{value:.2f}")
            for name, value in flow["other_processes"].items()
        ),
    ]
    if "raw" in figures:
        rows.append(
            ("client alone (no inbox, no Prefect), events/s", f"{figures['raw']['events_per_s']:,.0f}")
        )
    print(f"{'measurement':<56}{'figure':>20}")
    for name, value in rows:
        print(f"{name:<56}{value:>20}")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
