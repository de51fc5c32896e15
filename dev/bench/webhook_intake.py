"""Intake benchmark: signed, validated, committed CustomersDot events per second, and their latency.

The receiver runs in its own uvicorn process (``python -m iterable_recipes.receiver``); the load comes
from a light asyncio client that writes pre-signed HTTP/1.1 requests over keep-alive connections. Run
with ``uv run python -m dev.bench.webhook_intake [--events N] [--connections C]
[--backends sqlite,sqlite-normal,postgres] [--rate R] [--rate-seconds S] [--rounds N]``. Prints a
table, then one JSON line.

On SQLite (synchronous FULL) it also measures, in the same run and with the same load generator, in
``--rounds`` pairs that alternate (the pair of the median ratio is reported, every ratio beside it):
``intake_vs_bare``, the receiver's events/s over those of a bare Starlette endpoint that only stores
the raw body (``dev/bench/bare_intake.py``; ``intake_bare_events_per_s``); ``cpu_us_per_webhook``, the
receiver process's own CPU time (user + system, from /proc) per event of the measured run; and
``intake_p99_ms_at_3000``, the p99 latency with ``--rate`` (3,000) events/s offered by an open-loop
generator, each latency counted from the request's scheduled time (a late send counts as waiting).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from standardwebhooks import Webhook

from dev.standins.serving import free_port
from iterable_recipes.store import Inbox

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + base64.b64encode(b"bench-secret-bench-secret-bench!").decode()
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


RATE_CONNECTIONS = 128  # enough that the open-loop sends never wait for a free connection in normal runs


@dataclass
class Result:
    backend: str
    events: int
    connections: int
    seconds: float
    events_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    stored: int
    non_202: int


def build_requests(count: int, prefix: str) -> list[bytes]:
    """Pre-signed raw HTTP/1.1 requests, so signing costs nothing while measuring."""
    hook = Webhook(SECRET)
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        event = {
            "version": "1",
            "id": f"{prefix}-{i}",
            "type": "saas_trial_started",
            "occurred_at": "2024-06-11T10:00:00Z",
            "person": {"email": f"person{i}@example.com", "user_id": i},
            "data": {
                "company": "ACME",
                "country": "NL",
                "latest_trial_start_date": "2024-06-11",
                "userRole": "dev",
            },
        }
        body = json.dumps(event, separators=(",", ":"))
        msg_id = f"{prefix}-msg-{i}"
        head = (
            "POST /webhooks/customersdot HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nwebhook-id: {msg_id}\r\n"
            f"webhook-timestamp: {int(now.timestamp())}\r\n"
            f"webhook-signature: {hook.sign(msg_id, now, body)}\r\n\r\n"
        )
        out.append(head.encode() + body.encode())
    return out


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one response; return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def load(port: int, requests: list[bytes], connections: int) -> tuple[float, list[float], int]:
    """Send every request over ``connections`` keep-alive connections, one in flight per connection."""
    latencies: list[float] = []
    non_202 = 0
    queue = iter(requests)

    async def worker() -> None:
        nonlocal non_202
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for request in queue:
            started = time.perf_counter()
            writer.write(request)
            status = await read_response(reader)
            latencies.append(time.perf_counter() - started)
            non_202 += status != 202
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return time.perf_counter() - started, latencies, non_202


async def open_loop(
    port: int, requests: list[bytes], rate: float, connections: int = RATE_CONNECTIONS
) -> tuple[list[float], int]:
    """Offer ``requests`` at ``rate`` per second whatever the answers (open loop); return each latency from
    its scheduled send time, and how many were not answered 202."""
    latencies: list[float] = []
    non_202 = 0
    due: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

    async def worker() -> None:
        nonlocal non_202
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (job := await due.get()) is not None:
            scheduled, request = job
            writer.write(request)
            status = await read_response(reader)
            latencies.append(time.perf_counter() - scheduled)
            non_202 += status != 202
        writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    started = time.perf_counter()
    for i, request in enumerate(requests):
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due.put_nowait((scheduled, request))
    for _ in workers:
        due.put_nowait(None)
    await asyncio.gather(*workers)
    return latencies, non_202


def cpu_seconds(pid: int) -> float:
    """The process's own CPU time so far, user + system, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_listening(proc: subprocess.Popen[bytes], port: int, what: str) -> None:
    """Wait until ``proc`` accepts connections on ``port``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited during start") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{what} did not start")


PROFILE: str | None = None  # --profile: the receiver's cProfile output (its event loop thread)


def start_receiver(url: str, port: int, synchronous: str = "FULL") -> subprocess.Popen[bytes]:
    """The receiver in its own process, with Prefect pointed at a closed port (nudges fail fast, logged)."""
    env = os.environ | {
        "RECIPES_DATABASE_URL": url,
        "CUSTOMERSDOT_WEBHOOK_SECRETS": SECRET,
        "INBOX_SQLITE_SYNCHRONOUS": synchronous,
        "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",
        "PYTHONPATH": str(ROOT),
    }
    profile = ["-m", "cProfile", "-o", PROFILE] if PROFILE else []
    proc = subprocess.Popen(
        [
            sys.executable,
            *profile,
            "-m",
            "iterable_recipes.receiver",
            "--port",
            str(port),
            "--log-level",
            "error",
        ],
        cwd=ROOT,
        env=env,
    )
    wait_listening(proc, port, "receiver")
    return proc


@dataclass
class Extra:
    """What the SQLite FULL run measures beyond its Result: CPU per event and the open-loop latency."""

    cpu_us_per_webhook: float | None = None
    bare_cpu_us_per_webhook: float | None = None
    rate_offered: float | None = None
    rate_p99_ms: float | None = None
    rate_non_202: int | None = None


def run_backend(
    backend: str,
    url: str,
    events: int,
    connections: int,
    synchronous: str = "FULL",
    *,
    rate: float = 0.0,
    rate_seconds: float = 0.0,
    extra: Extra | None = None,
) -> Result:
    """Warm up, then measure ``events`` requests against a fresh receiver process; with ``extra``, also
    the receiver's CPU per event and, when ``rate``, the p99 at ``rate`` events/s offered."""
    port = free_port()
    proc = start_receiver(url, port, synchronous)
    rate_events = int(rate * rate_seconds)
    try:
        prefix = uuid.uuid4().hex[:8]
        asyncio.run(load(port, build_requests(500, f"warm{prefix}"), connections))
        requests = build_requests(events, prefix)
        cpu_before = cpu_seconds(proc.pid)
        seconds, latencies, non_202 = asyncio.run(load(port, requests, connections))
        cpu_used = cpu_seconds(proc.pid) - cpu_before
        if extra is not None:
            extra.cpu_us_per_webhook = round(cpu_used / events * 1e6, 1)
            if rate_events:
                offered = build_requests(rate_events, f"rate{prefix}")
                rate_latencies, extra.rate_non_202 = asyncio.run(open_loop(port, offered, rate))
                extra.rate_offered = rate
                extra.rate_p99_ms = round(statistics.quantiles(rate_latencies, n=100)[98] * 1000, 2)
    finally:
        # SIGINT under cProfile: uvicorn raises it again after shutdown, and cProfile writes on the way out.
        proc.send_signal(signal.SIGINT if PROFILE else signal.SIGTERM)
        proc.wait(15)
    store = Inbox(url)
    stored = sum(store.counts().get("customersdot", {}).values()) - 500 - (rate_events if extra else 0)
    store.dispose()
    return measured(backend, events, connections, seconds, latencies, stored, non_202)


def run_bare(events: int, connections: int, extra: Extra) -> Result:
    """The same load against the bare endpoint (``bare_intake.py``) over a fresh SQLite file."""
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        database = f"{folder}/bare.db"
        argv = [sys.executable, "-m", "dev.bench.bare_intake", "--port", str(port), "--database", database]
        proc = subprocess.Popen(argv, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})
        try:
            wait_listening(proc, port, "bare endpoint")
            prefix = uuid.uuid4().hex[:8]
            asyncio.run(load(port, build_requests(500, f"warm{prefix}"), connections))
            requests = build_requests(events, prefix)
            cpu_before = cpu_seconds(proc.pid)
            seconds, latencies, non_202 = asyncio.run(load(port, requests, connections))
            extra.bare_cpu_us_per_webhook = round((cpu_seconds(proc.pid) - cpu_before) / events * 1e6, 1)
        finally:
            proc.terminate()
            proc.wait(15)
        with sqlite3.connect(database) as conn:
            stored = int(conn.execute("SELECT count(*) FROM bare_events").fetchone()[0]) - 500
    return measured("bare-sqlite", events, connections, seconds, latencies, stored, non_202)


def paired_rounds(args: argparse.Namespace) -> tuple[Result, Result, Extra, list[float]]:
    """The receiver (SQLite FULL) and the bare endpoint, ``args.rounds`` times each, alternating; the
    pair whose ratio is the median (of the upper two for an even count), its extra figures, and every
    round's ratio. The first round also measures the open-loop p99 (once is enough: it is not a ratio).
    A shared machine's speed drifts within a minute; pairs taken a few seconds apart drift alike."""
    pairs: list[tuple[Result, Result, Extra]] = []
    for n in range(max(1, args.rounds)):
        extra = Extra()
        with tempfile.TemporaryDirectory() as folder:
            receiver = run_backend(
                "sqlite", f"sqlite:///{folder}/recipes.db", args.events, args.connections,
                rate=args.rate if n == 0 else 0.0, rate_seconds=args.rate_seconds, extra=extra,
            )  # fmt: skip
        bare = run_bare(args.events, args.connections, extra)
        pairs.append((receiver, bare, extra))
    ratios = [round(r.events_per_s / b.events_per_s, 3) for r, b, _ in pairs]
    receiver, bare, extra = pairs[median_index(ratios)]
    first = pairs[0][2]
    extra.rate_offered, extra.rate_p99_ms, extra.rate_non_202 = (
        first.rate_offered, first.rate_p99_ms, first.rate_non_202,
    )  # fmt: skip
    return receiver, bare, extra, ratios


def median_index(values: list[float]) -> int:
    """The position of the median of ``values`` (of the upper middle one for an even count)."""
    return sorted(range(len(values)), key=values.__getitem__)[len(values) // 2]


def measured(
    backend: str,
    events: int,
    connections: int,
    seconds: float,
    latencies: list[float],
    stored: int,
    non_202: int,
) -> Result:
    """One run's figures: rate, latency percentiles (ms) and what was stored."""
    cuts = statistics.quantiles(latencies, n=100)
    return Result(
        backend, events, connections, round(seconds, 3), round(events / seconds, 1),
        round(cuts[49] * 1000, 2), round(cuts[98] * 1000, 2), round(max(latencies) * 1000, 2),
        stored, non_202,
    )  # fmt: skip


def postgres_database() -> tuple[str, str] | None:
    """A fresh database for the run: (SQLAlchemy URL, name), or None when PostgreSQL is unreachable."""
    import psycopg

    name = f"bench_intake_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:
        return None
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}", name


def drop_postgres(name: str) -> None:
    """Drop the run's database."""
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    """Measure each backend and print the table and a JSON line."""
    parser = argparse.ArgumentParser(prog="python -m dev.bench.webhook_intake")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=32)
    # sqlite: synchronous=FULL (the default); sqlite-normal: INBOX_SQLITE_SYNCHRONOUS=NORMAL.
    parser.add_argument("--backends", default="sqlite,sqlite-normal,postgres")
    # The open-loop phase (SQLite FULL): events/s offered, for how long.
    parser.add_argument("--rate", type=float, default=3000.0)
    parser.add_argument("--rate-seconds", type=float, default=5.0)
    parser.add_argument("--profile", help="write the receiver's cProfile stats here (its main thread)")
    # SQLite FULL against the bare endpoint: this many pairs, alternating (noise moves both alike).
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    global PROFILE
    PROFILE = args.profile
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results: list[Result] = []
    extra = Extra()
    bare: Result | None = None
    rounds: list[float] = []
    for backend in args.backends.split(","):
        if backend not in {"sqlite", "sqlite-normal", "postgres"}:
            parser.error(f"unknown backend {backend!r}")
        if backend == "sqlite":
            receiver, bare, extra, rounds = paired_rounds(args)
            results.append(receiver)
        elif backend == "sqlite-normal":
            with tempfile.TemporaryDirectory() as folder:
                url = f"sqlite:///{folder}/recipes.db"
                results.append(run_backend(backend, url, args.events, args.connections, "NORMAL"))
        elif backend == "postgres":
            made = postgres_database()
            if made is None:
                print("postgres: unreachable, skipped", file=sys.stderr)
                continue
            try:
                results.append(run_backend("postgres", made[0], args.events, args.connections))
            finally:
                drop_postgres(made[1])
    header = ("backend", "events", "conns", "events/s", "p50 ms", "p99 ms", "max ms", "stored")
    print(f"{header[0]:<14}" + "".join(f"{h:>10}" for h in header[1:]))
    for r in results + ([bare] if bare else []):
        row = (r.events, r.connections, r.events_per_s, r.p50_ms, r.p99_ms, r.max_ms, r.stored)
        print(f"{r.backend:<14}" + "".join(f"{v:>10}" for v in row))
    sqlite_full = next((r for r in results if r.backend == "sqlite"), None)
    ratio = round(sqlite_full.events_per_s / bare.events_per_s, 3) if sqlite_full and bare else None
    if ratio is not None:
        print(f"receiver / bare Starlette insert: {ratio}")
    if extra.cpu_us_per_webhook is not None:
        bare_cpu = extra.bare_cpu_us_per_webhook
        print(f"CPU per webhook: receiver {extra.cpu_us_per_webhook} us, bare {bare_cpu} us")
    if extra.rate_p99_ms is not None:
        print(f"p99 at {extra.rate_offered:.0f} events/s offered: {extra.rate_p99_ms} ms")
    line = {
        "bench": "webhook_intake",
        "cpus": os.cpu_count(),
        "results": [asdict(r) for r in results],
        "bare": asdict(bare) if bare else None,
        "intake_vs_bare": ratio,
        "intake_rounds": rounds,
        "intake_bare_events_per_s": bare.events_per_s if bare else None,
        "intake_p99_ms_at_3000": extra.rate_p99_ms,
        "intake_rate_offered": extra.rate_offered,
        "intake_rate_non_202": extra.rate_non_202,
        "cpu_us_per_webhook": extra.cpu_us_per_webhook,
        "intake_bare_cpu_us_per_webhook": extra.bare_cpu_us_per_webhook,
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
