"""Recipe 2 bench: seconds from a Marketo webhook to the Iterable opt-out, and the poll's unsubscribes/s.

    uv run python -m dev.bench.optout_latency [--people 60] [--over 60] [--query-seconds 2]
                                          [--poll-unsubscribes 1000] [--poll-noise 2000]

A temporary Prefect server, the receiver (``python -m iterable_recipes.receiver``), the Iterable and
Marketo stand-ins and
a process serving prefect.yaml's ``marketo-opt-out-drain`` deployment (its 15-minute backstop schedule; the
runner asks for due runs every ``--query-seconds``, as ``recipes serve`` does) each run in their own
process, with the default trigger settings (the receiver's nudge window). ``--people`` people known to
the Iterable stand-in are unsubscribed by webhook, spread over ``--over`` seconds; each one's latency is
from the POST to the moment the stand-in shows the marketing email channel unsubscribed. Then the poll
(``marketo_poll(drain=False)``, its own app database) queues ``--poll-unsubscribes`` unsubscribes among
``--poll-noise`` other activities within the Marketo client's default 50 calls / 20 s.
Prints a table, then one JSON line. Figures only; nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import httpx

from dev.bench.common import (
    SANDBOX_ITERABLE_KEY,
    Spawned,
    free_port,
    http_ok,
    iterable_standin,
    marketo_standin,
    prefect_server,
    print_json_line,
    print_table,
    run_json,
)

DEPLOYMENT = "marketo-opt-out-drain"
MARKETING_EMAIL_CHANNEL = 1  # iterable_recipes/optouts/consent.yaml: the channel an opt-out unsubscribes
LEAD_OFFSET = 500_000  # webhook leads, apart from the poll's


def email(n: int) -> str:
    """The synthetic person ``n`` (never printed)."""
    return f"optout{n}@example.com"


# --- children ----------------------------------------------------------------------------------------


def serve_drain(query_seconds: float) -> None:
    """Serve prefect.yaml's opt-out drain deployment until terminated."""
    from prefect import serve

    from iterable_recipes.cli.deployments import read_deployments, to_runner_deployment

    spec = next(s for s in read_deployments() if s.name == DEPLOYMENT)
    serve(to_runner_deployment(spec), query_seconds=query_seconds, pause_on_shutdown=False)


def poll_child() -> None:
    """Run ``marketo_poll(drain=False)`` once on a fresh app database; print its counts and seconds."""
    from flows.marketo_unsubscribes import marketo_poll
    from iterable_recipes.settings import load_settings
    from iterable_recipes.store import migrate

    migrate(load_settings().recipes_database_url)
    began = time.perf_counter()
    summary = marketo_poll(drain=False)
    print_json_line({"seconds": time.perf_counter() - began, "summary": summary})


# --- the parent --------------------------------------------------------------------------------------


def wait_for_deployment(api_url: str, server: Spawned, timeout: float = 120) -> None:
    """Until the served deployment is registered (the receiver's nudge looks it up by name)."""
    url = f"{api_url}/deployments/name/marketo-opt-outs/{DEPLOYMENT}"
    server.wait_until(lambda: http_ok(url), timeout)


def measure_latency(receiver: str, iterable: str, secret: str, people: int, over: float) -> list[float]:
    """POST ``people`` unsubscribes spread over ``over`` s; seconds from each POST to its opt-out."""
    posted: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            users = httpx.get(f"{iterable}/_sandbox/users", timeout=30).json()
            now = time.monotonic()
            for user in users:
                address = user.get("email")
                if (
                    address in posted
                    and address not in seen
                    and MARKETING_EMAIL_CHANNEL in (user.get("unsubscribedChannelIds") or [])
                ):
                    seen[address] = now
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with httpx.Client(base_url=receiver, headers={"X-Recipes-Secret": secret}, timeout=30) as client:
        began = time.monotonic()
        for n in range(people):
            time.sleep(max(0.0, began + n * over / people - time.monotonic()))
            body = {
                "email": email(n),
                "leadId": str(LEAD_OFFSET + n),
                "unsubscribedAt": datetime.now(UTC).isoformat(),
            }
            posted[email(n)] = time.monotonic()
            answer = client.post("/webhooks/marketo/unsubscribe", json=body)
            if answer.status_code != 202:
                raise RuntimeError(f"the receiver answered {answer.status_code}")
    deadline = time.monotonic() + 180
    while len(seen) < people and time.monotonic() < deadline:
        time.sleep(0.5)
    done.set()
    watcher.join(timeout=30)
    return [seen[a] - posted[a] for a in posted if a in seen]


class DrainRuns(TypedDict):
    """The drain's flow runs as ``drain_runs`` counts them."""

    optout_flow_runs: float
    optout_flow_run_states: dict[str, int]
    optout_run_created_to_started_p50_seconds: float
    optout_run_started_to_ended_p50_seconds: float


def drain_runs(api_url: str) -> DrainRuns:
    """The drain's flow runs: how many, median seconds from creation to start and from start to end."""
    runs = httpx.post(f"{api_url}/flow_runs/filter", json={"limit": 200}, timeout=30).json()
    waits, spans = [], []
    states = Counter(str(run.get("state_type")) for run in runs)
    for run in runs:
        if run.get("start_time") and run.get("end_time"):
            created, started, ended = (
                datetime.fromisoformat(run[k]) for k in ("created", "start_time", "end_time")
            )
            waits.append((started - created).total_seconds())
            spans.append((ended - started).total_seconds())
    return {
        "optout_flow_runs": float(len(runs)),
        "optout_flow_run_states": dict(states),
        "optout_run_created_to_started_p50_seconds": round(statistics.median(waits), 2) if waits else -1,
        "optout_run_started_to_ended_p50_seconds": round(statistics.median(spans), 2) if spans else -1,
    }


def seed_marketo(url: str, unsubscribes: int, noise: int) -> None:
    """Leads 1..N, each unsubscribing by its email's link (type 9 and a change of the flag), and noise."""
    with httpx.Client(base_url=url, timeout=60) as client:
        leads = [{"id": n, "email": email(n)} for n in range(1, unsubscribes + 1)]
        client.post("/_sandbox/leads", json={"leads": leads}).raise_for_status()
        client.post("/_sandbox/noise", json={"n": noise // 2}).raise_for_status()
        for n in range(1, unsubscribes + 1):
            client.post("/_sandbox/unsubscribe", json={"lead_id": n, "how": "link"}).raise_for_status()
        client.post("/_sandbox/noise", json={"n": noise - noise // 2}).raise_for_status()


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def main(argv: list[str] | None = None) -> None:
    """Start everything, measure the webhook latency, then the poll's throughput; print."""
    parser = argparse.ArgumentParser(prog="python -m dev.bench.optout_latency", description=__doc__)
    parser.add_argument("--people", type=int, default=60)
    parser.add_argument("--over", type=float, default=60.0, help="seconds the webhooks are spread over")
    parser.add_argument(
        "--query-seconds",
        type=float,
        default=2.0,
        help="the runner's poll (recipes serve --query-seconds; Prefect's default is 10)",
    )
    parser.add_argument("--poll-unsubscribes", type=int, default=1000)
    parser.add_argument("--poll-noise", type=int, default=2000)
    parser.add_argument("--serve-drain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--poll-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_drain:
        serve_drain(args.query_seconds)
        return
    if args.poll_child:
        poll_child()
        return

    secret = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="bench-optout-") as tmp:
        folder = Path(tmp)
        with (
            prefect_server(folder / "prefect") as api_url,
            iterable_standin() as iterable,
            marketo_standin() as marketo,
        ):
            from dev.standins.marketo.state import SandboxOptions

            env = {
                "PREFECT_API_URL": api_url,
                "PREFECT_HOME": str(folder / "prefect"),
                "PREFECT_LOGGING_LEVEL": "WARNING",
                "RECIPES_DATABASE_URL": f"sqlite:///{folder / 'recipes.db'}",
                "ITERABLE_API_KEY": SANDBOX_ITERABLE_KEY,
                "ITERABLE_BASE_URL": iterable.url,
                "LIMITER_BACKEND": "sqlite",
                "LIMITER_SQLITE_PATH": str(folder / "limiter.sqlite"),
                "MARKETO_WEBHOOK_SECRET": secret,
                "MARKETO_BASE_URL": marketo.url,
                "MARKETO_CLIENT_ID": SandboxOptions().client_id,
                "MARKETO_CLIENT_SECRET": SandboxOptions().client_secret,
            }
            users = [{"email": email(n)} for n in range(args.people)]
            httpx.post(f"{iterable.url}/_sandbox/users", json=users, timeout=60).raise_for_status()

            port = free_port()
            drain = Spawned(
                "drain server",
                [
                    sys.executable,
                    "-m",
                    "dev.bench.optout_latency",
                    "--serve-drain",
                    "--query-seconds",
                    str(args.query_seconds),
                ],
                port,
                env,
            )
            receiver = Spawned(
                "receiver",
                [
                    sys.executable,
                    "-m",
                    "iterable_recipes.receiver",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ],
                port,
                env,
            )
            try:
                wait_for_deployment(api_url, drain)
                receiver.wait_until(lambda: http_ok(f"{receiver.url}/healthz"), 60)
                latencies = measure_latency(receiver.url, iterable.url, secret, args.people, args.over)
                runs = drain_runs(api_url)
            finally:
                receiver.stop()
                drain.stop()

            start = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
            seed_marketo(marketo.url, args.poll_unsubscribes, args.poll_noise)
            poll_env = env | {
                "RECIPES_DATABASE_URL": f"sqlite:///{folder / 'poll.db'}",
                "MARKETO_POLL_START": start,
            }
            poll = run_json([sys.executable, "-m", "dev.bench.optout_latency", "--poll-child"], env=poll_env)
            marketo_stats = httpx.get(f"{marketo.url}/_sandbox/stats", timeout=30).json()

    summary = poll["summary"]
    queued = int(summary.get("queued", 0))
    figures: dict[str, Any] = {
        "bench": "optout_latency",
        "cpu_count": os.cpu_count(),
        "optout_people": args.people,
        "optout_opted_out": len(latencies),
        "optout_query_seconds": args.query_seconds,
        "optout_p50_seconds": round(statistics.median(latencies), 2) if latencies else None,
        "optout_p99_seconds": round(percentile(latencies, 99), 2) if latencies else None,
        "optout_max_seconds": round(max(latencies), 2) if latencies else None,
        **runs,
        "poll_unsubscribes_seeded": args.poll_unsubscribes,
        "poll_noise_activities": args.poll_noise,
        "poll_queued": queued,
        "poll_seconds": round(poll["seconds"], 2),
        "poll_unsubscribes_per_s": round(queued / poll["seconds"], 1),
        "poll_marketo_calls": sum(marketo_stats.get("calls", {}).values()),
        "poll_marketo_errors": marketo_stats.get("errors", {}),
    }
    print_table(
        [
            (f"opt-outs seen of {args.people} webhooks", len(latencies)),
            ("webhook -> Iterable opt-out p50, s", figures["optout_p50_seconds"]),
            ("webhook -> Iterable opt-out p99, s", figures["optout_p99_seconds"]),
            ("webhook -> Iterable opt-out max, s", figures["optout_max_seconds"]),
            ("drain flow runs (any state, scheduled ones too)", int(runs["optout_flow_runs"])),
            (
                "  median s from a run's creation to its start",
                runs["optout_run_created_to_started_p50_seconds"],
            ),
            ("  median s from a run's start to its end", runs["optout_run_started_to_ended_p50_seconds"]),
            (f"poll: queued of {args.poll_unsubscribes} unsubscribes", queued),
            ("poll: seconds", figures["poll_seconds"]),
            ("poll: unsubscribes/s", figures["poll_unsubscribes_per_s"]),
        ]
    )
    print_json_line(figures)


if __name__ == "__main__":
    main()
