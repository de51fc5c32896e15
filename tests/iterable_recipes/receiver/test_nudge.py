"""The Nudger's promises (one Prefect call per deployment per window, waiting on unstarted runs), on a
clock the test moves by hand so no assertion depends on this machine's speed."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prefect import flow

from dev.standins.serving import free_port, serving
from iterable_recipes.receiver import Nudger, PrefectTrigger, create_app
from iterable_recipes.receiver.nudge import Clock, FlowRunTrigger, SystemClock
from iterable_recipes.store import Inbox, migrate
from tests.iterable_recipes.receiver.conftest import RecordingTrigger, dumps, settings_for, sign, trial

PATH = "/webhooks/customersdot"
WINDOW = 1.0
WALL = 1_000_000.0  # the manual clock's wall time at start: window index 1000000 for 1 s windows
# Only a broken hand-off waits this long; a slow machine finishes well inside it.
HANDOFF_TIMEOUT = 60.0


class ManualClock:
    """A ``Clock`` that moves only when the test advances it. Its ``wait_until`` is where the nudger's
    thread goes when nothing is ready, so reaching it is the signal that the thread is idle."""

    def __init__(self, wall: float = WALL) -> None:
        self._now = 0.0
        self._wall = wall
        self._lock = threading.Condition()
        self._conditions: set[threading.Condition] = set()
        self._epoch = 0
        self._idle_epoch = -1

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def time(self) -> float:
        with self._lock:
            return self._wall + self._now

    def wait_until(self, condition: threading.Condition, deadline: float | None) -> None:
        with self._lock:
            if deadline is not None and self._now >= deadline:
                # Time moved on after the caller read it: it must look again before it counts as idle.
                return
            self._conditions.add(condition)
            self._idle_epoch = self._epoch
            self._lock.notify_all()
        condition.wait()

    def advance(self, seconds: float) -> None:
        """Move both clocks on, then return once the nudger has sent everything due by then. What was
        nudged before is sent first, at the old time, so a call's time never depends on a race."""
        self.settle()
        with self._lock:
            self._now += seconds
        self.settle()

    def settle(self) -> None:
        """Return once the nudger's thread has looked at everything nudged so far and gone idle."""
        with self._lock:
            self._epoch += 1
            target = self._epoch
            conditions = list(self._conditions)
        # Wake the thread so it looks again and re-enters wait_until under the new epoch; never with
        # our lock held, as the thread takes it while holding its own.
        for condition in conditions:
            with condition:
                condition.notify_all()
        with self._lock:
            idle = self._lock.wait_for(lambda: self._idle_epoch >= target, HANDOFF_TIMEOUT)
        assert idle, "the nudger's thread did not go idle"


class StatefulTrigger:
    """A Prefect stand-in whose runs stay in the state the test sets; records every call with its
    (manual) time."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[tuple[float, str, str]] = []
        self.keys: list[str] = []
        self.states: dict[str, str] = {}
        self.lock = threading.Lock()

    def create_run(self, deployment: str, idempotency_key: str) -> str:
        with self.lock:
            run_id = f"run-{len(self.states) + 1}"
            self.states[run_id] = "SCHEDULED"
            self.calls.append((self.clock.monotonic(), "create", run_id))
            self.keys.append(idempotency_key)
            return run_id

    def run_state(self, run_id: str) -> str | None:
        with self.lock:
            self.calls.append((self.clock.monotonic(), "read", run_id))
            return self.states[run_id]

    def healthy(self) -> bool:
        return True

    def created(self) -> list[str]:
        with self.lock:
            return [run for _, kind, run in self.calls if kind == "create"]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def started() -> Iterator[list[Nudger]]:
    """Nudgers a test makes go here and are stopped after it, pass or fail."""
    nudgers: list[Nudger] = []
    yield nudgers
    for nudger in nudgers:
        nudger.stop()


def nudger_on(
    clock: ManualClock, trigger: FlowRunTrigger, started: list[Nudger], waiting_cap_seconds: float = 60.0
) -> Nudger:
    nudger = Nudger(trigger, WINDOW, waiting_cap_seconds, clock=clock)
    started.append(nudger.start())
    return nudger


def stream(nudger: Nudger, clock: ManualClock, windows: int) -> None:
    """Nudge the drain twice a window for ``windows`` windows, as a steady stream of webhooks does."""
    for _ in range(windows):
        nudger.nudge("drain")
        clock.advance(WINDOW / 2)
        nudger.nudge("drain")
        clock.advance(WINDOW / 2)


def test_the_default_clock_is_the_systems() -> None:
    assert isinstance(Nudger(RecordingTrigger()).clock, SystemClock)
    clock = SystemClock()
    condition = threading.Condition()
    with condition:
        clock.wait_until(condition, clock.monotonic() - 1)  # a deadline already passed: returns at once
    assert abs(clock.time() - time.time()) < 60


def test_nudges_in_one_window_make_one_run_and_the_next_window_another(
    clock: ManualClock, started: list[Nudger]
) -> None:
    trigger = RecordingTrigger()  # no run_state: every window that is due creates a run
    nudger = nudger_on(clock, trigger, started)
    for _ in range(3):
        nudger.nudge("drain")
    clock.settle()
    assert trigger.calls == [("drain", "drain:1000000")]

    # Nudged again inside the window: due, but the window's call is spent.
    clock.advance(WINDOW / 4)
    nudger.nudge("drain")
    clock.advance(WINDOW / 4)
    assert len(trigger.calls) == 1

    # The next window sends it, under a key naming that window.
    clock.advance(WINDOW / 2)
    assert trigger.calls[1:] == [("drain", "drain:1000001")]

    # Nothing nudged, nothing sent; a later nudge goes at once.
    clock.advance(5 * WINDOW)
    assert len(trigger.calls) == 2
    nudger.nudge("drain")
    nudger.nudge("other")
    clock.settle()
    assert sorted(trigger.calls[2:]) == [("drain", "drain:1000006"), ("other", "other:1000006")]
    assert (nudger.stats.requested, nudger.stats.sent, nudger.stats.failed) == (6, 4, 0)
    assert {name: len(runs) for name, runs in nudger.stats.runs.items()} == {"drain": 3, "other": 1}


def test_stop_sends_what_is_due_under_the_windows_key(clock: ManualClock) -> None:
    trigger = RecordingTrigger()
    nudger = Nudger(trigger, WINDOW, clock=clock).start()
    try:
        nudger.nudge("drain")
        clock.settle()
        nudger.nudge("drain")
        clock.settle()
        assert len(trigger.calls) == 1
    finally:
        nudger.stop()
    # The flush is a second call in the same window, so its key is the same: Prefect keeps one run.
    assert trigger.calls == [("drain", "drain:1000000")] * 2


def test_no_second_run_while_the_first_has_not_started_then_one_follow_up(
    clock: ManualClock, started: list[Nudger]
) -> None:
    trigger = StatefulTrigger(clock)
    nudger = nudger_on(clock, trigger, started, waiting_cap_seconds=60 * WINDOW)
    stream(nudger, clock, 10)
    # Ten windows of nudges, one run: each later window only reads that it still waits.
    assert trigger.created() == ["run-1"]
    assert nudger.stats.waited == 10
    trigger.states["run-1"] = "PENDING"
    stream(nudger, clock, 5)
    assert trigger.created() == ["run-1"]
    assert nudger.stats.waited == 15

    # It runs: one window reads that, the next creates one follow-up run, which is then waited on.
    trigger.states["run-1"] = "RUNNING"
    stream(nudger, clock, 1)
    assert trigger.created() == ["run-1"]
    stream(nudger, clock, 1)
    assert trigger.created() == ["run-1", "run-2"]
    assert trigger.keys == ["drain:1000000", "drain:1000017"]
    stream(nudger, clock, 3)
    assert trigger.created() == ["run-1", "run-2"]

    trigger.states["run-2"] = "COMPLETED"
    stream(nudger, clock, 2)
    assert trigger.created() == ["run-1", "run-2", "run-3"]
    # Never more than one call per window, reads included.
    times = [at for at, _, _ in trigger.calls]
    assert all(b - a >= WINDOW for a, b in itertools.pairwise(times)), times
    assert nudger.stats.sent == 3 and nudger.stats.failed == 0


def test_a_run_that_never_starts_does_not_hold_events_back(clock: ManualClock, started: list[Nudger]) -> None:
    trigger = StatefulTrigger(clock)
    nudger = nudger_on(clock, trigger, started, waiting_cap_seconds=5 * WINDOW)
    stream(nudger, clock, 4)
    # Scheduled forever (no runner): held back until the cap...
    assert trigger.created() == ["run-1"]
    stream(nudger, clock, 1)
    # ...then a new run, which holds back the same way.
    assert trigger.created() == ["run-1", "run-2"]
    stream(nudger, clock, 4)
    assert trigger.created() == ["run-1", "run-2"]
    stream(nudger, clock, 1)
    assert trigger.created() == ["run-1", "run-2", "run-3"]


def test_a_failed_state_read_leads_to_a_new_run(
    clock: ManualClock, started: list[Nudger], caplog: pytest.LogCaptureFixture
) -> None:
    class Unreadable(StatefulTrigger):
        def run_state(self, run_id: str) -> str | None:
            super().run_state(run_id)
            raise httpx.ConnectError("Prefect went away")

    trigger = Unreadable(clock)
    nudger = nudger_on(clock, trigger, started)
    nudger.nudge("drain")
    clock.settle()
    with caplog.at_level(logging.WARNING, "iterable_recipes.receiver.nudge"):
        stream(nudger, clock, 1)
        # The read failed: treated as started, so the next window creates the follow-up.
        assert trigger.created() == ["run-1"]
        clock.advance(WINDOW)
    assert trigger.created() == ["run-1", "run-2"]
    assert nudger.stats.checked == 1
    assert "reading the state of a drain run failed (ConnectError)" in caplog.text


def test_prefect_failing_is_logged_and_dropped(
    clock: ManualClock, started: list[Nudger], caplog: pytest.LogCaptureFixture
) -> None:
    class Failing(RecordingTrigger):
        def create_run(self, deployment: str, idempotency_key: str) -> str:
            super().create_run(deployment, idempotency_key)
            raise httpx.ConnectError("no route to http://user:hunter2@prefect.example.com/api")

    trigger = Failing()
    nudger = nudger_on(clock, trigger, started)
    with caplog.at_level(logging.WARNING, "iterable_recipes.receiver.nudge"):
        nudger.nudge("drain")
        clock.settle()
    assert (nudger.stats.failed, nudger.stats.sent) == (1, 0)
    assert "nudge of deployment drain failed (ConnectError)" in caplog.text
    assert "hunter2" not in caplog.text
    # Dropped, not retried: the drain's schedule picks the events up.
    clock.advance(3 * WINDOW)
    assert len(trigger.calls) == 1
    # The thread lives on: the next nudge is tried.
    nudger.nudge("drain")
    clock.settle()
    assert len(trigger.calls) == 2 and nudger.stats.failed == 2


@flow(name="nudge-test-drain")
def nudge_test_drain() -> int:
    return 0


def burst(base: str, count: int, prefix: str) -> list[int]:
    bodies = [dumps(trial(event_id=f"{prefix}-{i}")) for i in range(count)]

    def send(chunk: range) -> list[int]:
        with httpx.Client(base_url=base, timeout=30) as client:
            return [
                client.post(PATH, content=bodies[i], headers=sign(bodies[i], f"{prefix}-m-{i}")).status_code
                for i in chunk
            ]

    with ThreadPoolExecutor(4) as pool:
        chunks = [range(start, count, 4) for start in range(4)]
        return [status for statuses in pool.map(send, chunks) for status in statuses]


def test_a_burst_over_two_windows_makes_one_flow_run_of_the_real_deployment(
    prefect_server: None, tmp_path: Path, clock: ManualClock
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.deployments.runner import RunnerDeployment

    deployment = nudge_test_drain.to_deployment("burst")
    assert isinstance(deployment, RunnerDeployment)  # called from sync code: not a coroutine
    deployment_id = deployment.apply()
    url = f"sqlite:///{tmp_path}/recipes.db"
    migrate(url)
    settings = settings_for(
        url, customersdot_drain_deployment="nudge-test-drain/burst", nudge_window_seconds=WINDOW
    )
    inbox = Inbox(url)
    nudger = Nudger(PrefectTrigger(), WINDOW, clock=clock).start()
    count = 200
    try:
        with serving(create_app(settings, nudger, inbox=inbox)) as base:
            statuses = burst(base, count, "first")
            # The next window reads the run: no runner here, so it is still Scheduled and holds the
            # second half of the burst back too.
            clock.advance(WINDOW)
            statuses += burst(base, count, "second")
    finally:
        nudger.stop()
        inbox.dispose()
    assert statuses == [202] * (2 * count)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
    assert nudger.stats.requested == 2 * count
    assert (nudger.stats.sent, nudger.stats.failed) == (1, 0)
    assert nudger.stats.checked >= 1 and nudger.stats.waited == nudger.stats.checked
    assert [str(run.id) for run in runs] == list(nudger.stats.runs["nudge-test-drain/burst"])
    assert runs[0].idempotency_key == "nudge-test-drain/burst:1000000"


def test_the_trigger_keeps_one_prefect_client_for_its_life(prefect_server: None, clock: ManualClock) -> None:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.deployments.runner import RunnerDeployment
    from prefect.settings import PREFECT_API_URL

    deployment = nudge_test_drain.to_deployment("one-client")
    assert isinstance(deployment, RunnerDeployment)
    deployment.apply()
    made: list[SyncPrefectClient] = []

    def counted() -> SyncPrefectClient:
        made.append(SyncPrefectClient(str(PREFECT_API_URL.value()), httpx_settings={"timeout": 10}))
        return made[-1]

    trigger = PrefectTrigger(client_factory=counted)
    nudger = Nudger(trigger, WINDOW, clock=clock).start()
    try:
        nudger.nudge("nudge-test-drain/one-client")
        clock.advance(WINDOW)  # creates the run
        nudger.nudge("nudge-test-drain/one-client")
        clock.advance(WINDOW)  # reads its state: no runner here, so Scheduled
        healthy = trigger.healthy()
    finally:
        nudger.stop()
    assert (nudger.stats.sent, nudger.stats.checked, nudger.stats.waited, nudger.stats.failed) == (1, 1, 1, 0)
    assert healthy
    assert len(made) == 1  # two nudges' calls and a health check, one client (one SSL context)
    with pytest.raises(RuntimeError, match="cannot be started again after closing"):
        made[0].__enter__()  # stop() closed it
    assert trigger.healthy() and len(made) == 2  # used again after close: a new one
    trigger.close()


def test_with_prefect_unreachable_the_receiver_still_accepts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The system clock on purpose: the default path, with nothing asserted about its timing.
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
    stored = inbox.get(answer.json()["id"])
    assert stored is not None and stored.status == "pending"
    assert nudger.stats.failed == 1 and nudger.stats.sent == 0
    assert health.status_code == 200 and health.json()["prefect"] == "unreachable"
    assert "nudge of deployment" in caplog.text and "hidden@example.com" not in caplog.text
    inbox.dispose()
