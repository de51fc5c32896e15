"""Intake benchmark: signed, validated, committed CustomersDot events per second, and their latency.

The receiver runs in its own uvicorn process (``python -m iterable_recipes.receiver``); the load comes
from a light
asyncio client that writes pre-signed HTTP/1.1 requests over keep-alive connections. Run with
``uv run python -m dev.bench.webhook_intake [--events N] [--connections C] [--backends sqlite,postgres]``.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
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


def start_receiver(url: str, port: int, synchronous: str = "FULL") -> subprocess.Popen[bytes]:
    """The receiver in its own process, with Prefect pointed at a closed port (nudges fail fast, logged)."""
    env = os.environ | {
        "RECIPES_DATABASE_URL": url,
        "CUSTOMERSDOT_WEBHOOK_SECRETS": SECRET,
        "INBOX_SQLITE_SYNCHRONOUS": synchronous,
        "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "iterable_recipes.receiver", "--port", str(port), "--log-level", "error"],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("receiver exited during start") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("receiver did not start")


def run_backend(backend: str, url: str, events: int, connections: int, synchronous: str = "FULL") -> Result:
    """Warm up, then measure ``events`` requests against a fresh receiver process."""
    port = free_port()
    proc = start_receiver(url, port, synchronous)
    try:
        prefix = uuid.uuid4().hex[:8]
        asyncio.run(load(port, build_requests(500, f"warm{prefix}"), connections))
        requests = build_requests(events, prefix)
        seconds, latencies, non_202 = asyncio.run(load(port, requests, connections))
    finally:
        proc.terminate()
        proc.wait(15)
    store = Inbox(url)
    stored = sum(store.counts().get("customersdot", {}).values()) - 500
    store.dispose()
    cuts = statistics.quantiles(latencies, n=100)
    return Result(
        backend,
        events,
        connections,
        round(seconds, 3),
        round(events / seconds, 1),
        round(cuts[49] * 1000, 2),
        round(cuts[98] * 1000, 2),
        round(max(latencies) * 1000, 2),
        stored,
        non_202,
    )


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
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results: list[Result] = []
    for backend in args.backends.split(","):
        if backend not in {"sqlite", "sqlite-normal", "postgres"}:
            parser.error(f"unknown backend {backend!r}")
        if backend in {"sqlite", "sqlite-normal"}:
            synchronous = "NORMAL" if backend == "sqlite-normal" else "FULL"
            with tempfile.TemporaryDirectory() as folder:
                url = f"sqlite:///{folder}/recipes.db"
                results.append(run_backend(backend, url, args.events, args.connections, synchronous))
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
    for r in results:
        row = (r.events, r.connections, r.events_per_s, r.p50_ms, r.p99_ms, r.max_ms, r.stored)
        print(f"{r.backend:<14}" + "".join(f"{v:>10}" for v in row))
    print(
        json.dumps(
            {"bench": "webhook_intake", "cpus": os.cpu_count(), "results": [asdict(r) for r in results]}
        )
    )


if __name__ == "__main__":
    main()
