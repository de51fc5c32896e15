from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prefect import flow

from dev.standins.serving import free_port, serving
from iterable_recipes.receiver import Nudger, PrefectTrigger, create_app
from iterable_recipes.store import Inbox, migrate
from tests.iterable_recipes.receiver.conftest import dumps, settings_for, sign, trial

PATH = "/webhooks/customersdot"
WINDOW = 0.5


@flow(name="nudge-test-drain")
def nudge_test_drain() -> int:
    return 0


def burst(base: str, count: int) -> list[int]:
    bodies = [dumps(trial(event_id=f"burst-{i}")) for i in range(count)]

    def send(chunk: range) -> list[int]:
        with httpx.Client(base_url=base, timeout=30) as client:
            return [
                client.post(PATH, content=bodies[i], headers=sign(bodies[i], f"m-{i}")).status_code
                for i in chunk
            ]

    with ThreadPoolExecutor(4) as pool:
        chunks = [range(start, count, 4) for start in range(4)]
        return [status for statuses in pool.map(send, chunks) for status in statuses]


def test_a_burst_makes_a_handful_of_flow_runs_of_the_real_deployment(
    prefect_server: None, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deployment_id = nudge_test_drain.to_deployment("burst").apply()
    url = f"sqlite:///{tmp_path}/recipes.db"
    migrate(url)
    settings = settings_for(
        url, customersdot_drain_deployment="nudge-test-drain/burst", nudge_window_seconds=WINDOW
    )
    inbox = Inbox(url)
    nudger = Nudger(PrefectTrigger(), WINDOW).start()
    count = 400
    with serving(create_app(settings, nudger, inbox=inbox)) as base:
        started = time.monotonic()
        statuses = burst(base, count)
        elapsed = time.monotonic() - started
    nudger.stop()
    assert statuses == [202] * count
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
    windows = int(elapsed / WINDOW) + 2  # the burst spans this many windows; each allows one call
    assert nudger.stats.requested == count
    assert nudger.stats.failed == 0
    assert 1 <= len(runs) <= windows, (len(runs), elapsed)
    # Two calls in one window (the flush at stop) carry the same idempotency key: Prefect keeps one run.
    assert len(runs) == len(nudger.stats.runs["nudge-test-drain/burst"]) <= nudger.stats.sent
    inbox.dispose()


def test_with_prefect_unreachable_the_receiver_still_accepts(tmp_path: Path, caplog) -> None:
    url = f"sqlite:///{tmp_path}/recipes.db"
    migrate(url)
    inbox = Inbox(url)
    nowhere = PrefectTrigger(api_url=f"http://127.0.0.1:{free_port()}/api", timeout_seconds=1)
    nudger = Nudger(nowhere, WINDOW).start()
    with serving(create_app(settings_for(url), nudger, inbox=inbox)) as base:
        body = dumps(trial(email="hidden@example.com"))
        answer = httpx.post(base + PATH, content=body, headers=sign(body, "m-1"))
        health = httpx.get(base + "/healthz", timeout=10)
        nudger.stop()
    assert answer.status_code == 202
    assert inbox.get(answer.json()["id"]).status == "pending"
    assert nudger.stats.failed == 1 and nudger.stats.sent == 0
    assert health.status_code == 200 and health.json()["prefect"] == "unreachable"
    assert "nudge of deployment" in caplog.text and "hidden@example.com" not in caplog.text
    inbox.dispose()


class StatefulTrigger:
    """A Prefect stand-in whose runs stay in the state the test sets; records every call with its time."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str, str]] = []
        self.states: dict[str, str] = {}
        self.lock = threading.Lock()

    def create_run(self, deployment: str, idempotency_key: str) -> str:
        with self.lock:
            run_id = f"run-{len(self.states) + 1}"
            self.states[run_id] = "SCHEDULED"
            self.calls.append((time.monotonic(), "create", run_id))
            return run_id

    def run_state(self, run_id: str) -> str | None:
        with self.lock:
            self.calls.append((time.monotonic(), "read", run_id))
            return self.states[run_id]

    def healthy(self) -> bool:
        return True

    def created(self) -> list[str]:
        with self.lock:
            return [run for _, kind, run in self.calls if kind == "create"]


def nudge_for(nudger: Nudger, seconds: float, every: float = 0.05) -> None:
    """Nudge the drain continuously, as a steady stream of webhooks does."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        nudger.nudge("drain")
        time.sleep(every)


def nudged_for(trigger: StatefulTrigger, seconds: float, waiting_cap_seconds: float) -> Nudger:
    """A nudger in 0.1 s windows, nudged for ``seconds`` and stopped; returned for its stats."""
    nudger = Nudger(trigger, window_seconds=0.1, waiting_cap_seconds=waiting_cap_seconds).start()
    try:
        nudge_for(nudger, seconds)
    finally:
        nudger.stop()
    return nudger


def test_no_second_run_while_the_first_has_not_started_then_one_follow_up() -> None:
    trigger = StatefulTrigger()
    nudger = Nudger(trigger, window_seconds=0.1, waiting_cap_seconds=60).start()
    try:
        nudge_for(nudger, 1.0)
        # Ten windows of nudges, one run: the others only read that it still waits (Pending, too).
        assert trigger.created() == ["run-1"]
        trigger.states["run-1"] = "PENDING"
        nudge_for(nudger, 0.5)
        assert trigger.created() == ["run-1"]
        assert nudger.stats.waited >= 5

        # It runs: events committed after its last claim get one follow-up run, which is then waited on.
        trigger.states["run-1"] = "RUNNING"
        nudge_for(nudger, 1.0)
        assert trigger.created() == ["run-1", "run-2"]
        trigger.states["run-2"] = "COMPLETED"
        nudge_for(nudger, 0.5)
        assert trigger.created() == ["run-1", "run-2", "run-3"]
        stopping = time.monotonic()
    finally:
        nudger.stop()
    # Never more than one call per window, reads included (stop() flushes at once: left out).
    times = [at for at, _, _ in trigger.calls if at < stopping]
    assert all(b - a >= 0.1 * 0.9 for a, b in itertools.pairwise(times)), times
    assert nudger.stats.sent == 3 and nudger.stats.failed == 0


def test_a_run_that_never_starts_does_not_hold_events_back() -> None:
    trigger = StatefulTrigger()
    nudged_for(trigger, 1.3, waiting_cap_seconds=0.5)
    # Scheduled forever (no runner): a new run once the last one has waited past the cap.
    assert 2 <= len(trigger.created()) <= 3, trigger.calls


def test_a_failed_state_read_leads_to_a_new_run() -> None:
    class Unreadable(StatefulTrigger):
        def run_state(self, run_id: str) -> str | None:
            super().run_state(run_id)
            raise httpx.ConnectError("Prefect went away")

    trigger = Unreadable()
    nudger = nudged_for(trigger, 0.6, waiting_cap_seconds=60)
    assert len(trigger.created()) >= 2
    assert nudger.stats.checked >= 1
