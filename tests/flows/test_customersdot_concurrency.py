"""Recipe 1 under crashes and concurrency: drains run as their own processes, as `serve` runs them.

A drain killed mid-batch loses nothing and re-sends only what it had in flight, with the same event
ids; two drains at once on PostgreSQL send each item once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from iterable_recipes.checks import check_at_start
from iterable_recipes.clients.limiter import NoLimiter
from iterable_recipes.resources import Resources
from iterable_recipes.settings import load_settings
from iterable_recipes.store.inbox import Inbox, NewItem
from tests.conftest import ROOT, scratch_database
from tests.integration import IterableStandIn, customersdot_event

pytestmark = pytest.mark.usefixtures("prefect_server")
SOURCE = "customersdot"

# A drain as a deployment's flow run would be: its own process, settings from the environment.
# It warms Prefect up with a no-op flow run and signals, then waits for "go", so concurrent drains
# really start together (a cold flow run start can outlast a whole small drain).
DRAIN_SCRIPT = """
import json, sys, time
from pathlib import Path
from prefect import flow
from flows.customersdot_events import customersdot_drain
ready, go, batch_size = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
flow(name="warm-up")(lambda: None)()
ready.touch()
while not go.exists():
    time.sleep(0.02)
print("RESULT " + json.dumps(customersdot_drain(batch_size=batch_size)), flush=True)
"""


class DrainProcess:
    """One drain flow run in a subprocess, against the test's Prefect server, app database and stand-in."""

    def __init__(self, workdir: Path, name: str, batch_size: int, env: dict[str, str]) -> None:
        self.ready = workdir / f"{name}.ready"
        self.go = workdir / "go"
        self.log = workdir / f"{name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", DRAIN_SCRIPT, str(self.ready), str(self.go), str(batch_size)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 60) -> None:
        """Block until the process has imported the flow (or fail, showing its output)."""
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, "drain process did not start:\n" + self.output()
            time.sleep(0.05)

    def result(self, timeout: float = 120) -> dict[str, int]:
        """The drain's counts once it exits."""
        self.process.wait(timeout=timeout)
        for line in self.output().splitlines():
            if line.startswith("RESULT "):
                return dict(json.loads(line.removeprefix("RESULT ")))
        raise AssertionError(f"drain exited {self.process.returncode} without a result:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """SIGKILL: no cleanup, no lease released, exactly what a lost worker looks like."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def drain_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test's environment (app database, stand-in, secrets) for a drain process."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        # One limiter for every drain process of the machine, as in production on one host.
        LIMITER_BACKEND="sqlite",
        LIMITER_SQLITE_PATH=str(tmp_path / "limiter.sqlite"),
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def add_events(inbox: Inbox, count: int) -> list[dict[str, Any]]:
    """Store ``count`` CustomersDot events as the receiver would; returns their bodies."""
    bodies = [customersdot_event() for _ in range(count)]
    inbox.add_many([NewItem(SOURCE, b["id"], b["type"], b) for b in bodies])
    return bodies


def lease_owners(inbox: Inbox) -> set[str]:
    """The owners of the leases on the inbox's CustomersDot items now."""
    items = inbox.list_items(status="in_flight", source=SOURCE, limit=1000)
    return {item.lease_owner for item in items if item.lease_owner is not None}


def total(stats: dict[str, Any], endpoint: str) -> int:
    """Requests the stand-in answered for ``endpoint``, any status."""
    return sum(stats["requests"].get(endpoint, {}).values())


def test_killed_drain_resends_only_its_batches_in_flight(
    iterable_standin: IterableStandIn, app_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.customersdot_events import customersdot_drain

    batch_size, depth, lease = 5, 3, 2
    monkeypatch.setenv("INBOX_LEASE_SECONDS", str(lease))
    monkeypatch.setenv("DRAIN_BATCHES_IN_FLIGHT", str(depth))
    sandbox = iterable_standin.sandbox
    inbox = Inbox(app_database)
    bodies = add_events(inbox, 80)
    # Slow answers keep several batches in flight at any moment, so the kill lands mid-way.
    sandbox.set_faults(latency_seconds=0.2)

    drain = DrainProcess(tmp_path, "killed", batch_size, drain_env(tmp_path))
    try:
        drain.wait_ready()
        drain.go.touch()
        deadline = time.monotonic() + 90
        while total(sandbox.stats(), "events/trackBulk") < 3:
            assert drain.process.poll() is None, "drain ended before the kill:\n" + drain.output()
            assert time.monotonic() < deadline, "drain made no progress:\n" + drain.output()
            time.sleep(0.02)
    finally:
        drain.kill()

    in_flight = inbox.list_items(status="in_flight", source=SOURCE, limit=1000)
    assert in_flight, "the kill should leave leased items behind"
    assert len(in_flight) <= depth * batch_size
    assert inbox.counts()[SOURCE].get("delivered", 0) < len(bodies)
    in_flight_ids = {f"cdot-{item.source_id}" for item in in_flight}

    sandbox.clear_faults()
    # Leases are the only way back: wait until the killed drain's have run out.
    expiry = max(item.lease_expires_at for item in in_flight if item.lease_expires_at is not None)
    time.sleep(max(0.0, (expiry - datetime.now(UTC)).total_seconds()) + 0.1)
    counts = customersdot_drain(batch_size=batch_size)
    assert counts["delivered"] == counts["received"] > 0, counts

    assert inbox.counts()[SOURCE] == {"delivered": len(bodies)}
    writes = sandbox.stats()["event_writes"]
    # Every event is there under the id derived from its CustomersDot id: re-sends updated, never added.
    assert set(writes) == set(sandbox.events()) == {f"cdot-{b['id']}" for b in bodies}
    resent = {event for event, n in writes.items() if n > 1}
    assert max(writes.values()) <= 2
    # Only items the killed drain still held went out twice: at most its batches in flight.
    assert resent <= in_flight_ids
    assert len(resent) <= depth * batch_size


@pytest.fixture
def own_postgres(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated PostgreSQL app database of this test's own (the session's is shared with others)."""
    from iterable_recipes.store.migrate import migrate

    with scratch_database("recipes_cdot") as url:
        migrate(url)
        monkeypatch.setenv("RECIPES_DATABASE_URL", url)
        yield url


def test_two_drains_at_once_on_postgres_send_each_item_once(
    iterable_standin: IterableStandIn, app_database: str, own_postgres: str, tmp_path: Path
) -> None:
    sandbox = iterable_standin.sandbox
    inbox = Inbox(own_postgres)
    bodies = add_events(inbox, 160)
    # The key check passed lately (as on any running system), so the drains' start check is trusted
    # from the shared database and does not wait on the held stand-in.
    with Resources(load_settings(), limiter=NoLimiter()) as resources:
        check_at_start(resources, "iterable_key")
    # Iterable holds every request until both drains hold leases: however unevenly their flow runs
    # start, neither can empty the inbox before the other has claimed.
    sandbox.hold()

    env = drain_env(tmp_path, RECIPES_DATABASE_URL=own_postgres)
    drains = [DrainProcess(tmp_path, name, 10, env) for name in ("first", "second")]
    try:
        for drain in drains:
            drain.wait_ready()
        drains[0].go.touch()
        deadline = time.monotonic() + 90
        while len(lease_owners(inbox)) < len(drains):
            for drain in drains:
                assert drain.process.poll() is None, "drain ended before claiming:\n" + drain.output()
            assert time.monotonic() < deadline, "the drains did not both claim"
            time.sleep(0.05)
        sandbox.release()
        results = [drain.result() for drain in drains]
    finally:
        sandbox.release()
        for drain in drains:
            drain.kill()

    assert all(r["received"] > 0 for r in results), results
    assert sum(r["received"] for r in results) == len(bodies)
    assert sum(r["delivered"] for r in results) == len(bodies)
    assert inbox.counts()[SOURCE] == {"delivered": len(bodies)}
    writes = sandbox.stats()["event_writes"]
    assert set(writes) == {f"cdot-{b['id']}" for b in bodies}
    assert set(writes.values()) == {1}
    assert sum(sandbox.stats()["profile_writes"].values()) == len(bodies)
    inbox.dispose()
