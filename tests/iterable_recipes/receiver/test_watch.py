"""The due-work watcher: a drain run only when work is due and no run will take it, within one interval of
a lost nudge; on a clock the test moves by hand, so nothing depends on this machine's speed."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from prefect import flow
from sqlalchemy import update

from iterable_recipes.optouts.keys import SOURCE as OPTOUTS
from iterable_recipes.optouts.keys import webhook_item
from iterable_recipes.receiver import PrefectTrigger, create_app
from iterable_recipes.receiver.app import watched_drains
from iterable_recipes.receiver.watch import DueWorkWatcher, Watched
from iterable_recipes.store import Inbox, NewItem, migrate
from iterable_recipes.store.db import utcnow
from iterable_recipes.store.schema import received_events, suppressions
from tests.iterable_recipes.receiver.conftest import settings_for
from tests.iterable_recipes.receiver.test_nudge import ManualClock

INTERVAL = 30.0
DRAIN = "drain/default"


class StepClock:
    """A clock for passes the test makes itself (no thread): it moves only by ``advance``."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_000_000.0 + self.now

    def wait_until(self, condition: threading.Condition, deadline: float | None) -> None:
        raise AssertionError("no thread runs on this clock")

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakePrefect:
    """The watcher's trigger: records created runs; their states and "a run is under way" are the test's."""

    def __init__(self) -> None:
        self.created: list[tuple[str, str]] = []
        self.states: dict[str, str] = {}
        self.asked_active: list[str] = []
        self.under_way = False

    def create_run(self, deployment: str, idempotency_key: str) -> str:
        run_id = f"run-{len(self.created) + 1}"
        self.created.append((deployment, idempotency_key))
        self.states[run_id] = "SCHEDULED"
        return run_id

    def run_state(self, run_id: str) -> str | None:
        return self.states[run_id]

    def active_run(self, deployment: str) -> bool:
        self.asked_active.append(deployment)
        return self.under_way

    def healthy(self) -> bool:
        return True


@pytest.fixture
def inbox(tmp_path: Path) -> Inbox:
    url = f"sqlite:///{tmp_path}/recipes.db"
    migrate(url)
    return Inbox(url)


def item(source_id: str, source: str = "customersdot") -> NewItem:
    return NewItem(source=source, source_id=source_id, kind="saas_trial_started", payload={"n": source_id})


def test_nothing_due_creates_nothing_and_does_not_ask_prefect() -> None:
    prefect, due = FakePrefect(), False
    watcher = DueWorkWatcher(prefect, [Watched(DRAIN, lambda: due)], INTERVAL, clock=StepClock())
    for _ in range(10):
        assert watcher.check() == []
    # A quiet inbox costs one database query a pass and no Prefect call.
    assert prefect.created == [] and prefect.asked_active == []


def test_work_due_and_no_run_under_way_creates_one_run_per_interval() -> None:
    prefect, clock = FakePrefect(), StepClock()
    watcher = DueWorkWatcher(prefect, [Watched(DRAIN, lambda: True)], INTERVAL, clock=clock)
    assert watcher.check() == ["run-1"]
    # The key names the interval: replicas watching the same inbox in it share the run.
    assert prefect.created == [(DRAIN, f"{DRAIN}:due:{int(clock.time() // INTERVAL)}")]

    # A run is under way (the one just made, or a nudged one): it will claim the due work.
    prefect.under_way = True
    assert watcher.check() == []
    assert watcher.stats.active == 1

    # It ended and work is still due (a retry whose backoff ended): the next pass makes a run.
    prefect.under_way, prefect.states["run-1"] = False, "COMPLETED"
    clock.advance(INTERVAL)
    assert watcher.check() == ["run-2"]
    assert len({key for _, key in prefect.created}) == 2


def test_only_the_drain_with_due_work_gets_a_run() -> None:
    prefect = FakePrefect()
    watched = [Watched("a/default", lambda: False), Watched("b/default", lambda: True)]
    watcher = DueWorkWatcher(prefect, watched, INTERVAL, clock=StepClock())
    watcher.check()
    assert [deployment for deployment, _ in prefect.created] == ["b/default"]


def test_a_failing_drain_is_restarted_less_and_less_often() -> None:
    prefect, clock = FakePrefect(), StepClock()
    watcher = DueWorkWatcher(
        prefect, [Watched(DRAIN, lambda: True)], INTERVAL, backoff_cap_seconds=4 * INTERVAL, clock=clock
    )
    starts = []
    for tick in range(12):
        if created := watcher.check():
            starts.append(tick)
            prefect.states[created[0]] = "FAILED"  # a refused key: every run fails
        clock.advance(INTERVAL)
    # Failed once: wait 2 intervals; twice: 4 (the cap); then every 4.
    assert starts == [0, 2, 6, 10]
    assert watcher.stats.backing_off > 0

    # The key is fixed: the next run completes, which ends the backoff.
    clock.advance(4 * INTERVAL)
    [fixed] = watcher.check()
    prefect.states[fixed] = "COMPLETED"
    clock.advance(INTERVAL)
    assert watcher.check() != []


def test_a_failing_inbox_or_prefect_is_logged_and_the_next_pass_tries_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Down(FakePrefect):
        def active_run(self, deployment: str) -> bool:
            raise ConnectionError("http://user:hunter2@prefect.example.com/api")

    def broken() -> bool:
        raise RuntimeError("postgresql://user:hunter2@db/recipes")

    watcher = DueWorkWatcher(Down(), [Watched("x/a", broken), Watched(DRAIN, lambda: True)], INTERVAL)
    with caplog.at_level("WARNING", "iterable_recipes.receiver.watch"):
        assert watcher.check() == []
    assert "asking the inbox for due work failed (RuntimeError)" in caplog.text
    assert f"could not start a run of {DRAIN} (ConnectionError)" in caplog.text
    assert "hunter2" not in caplog.text and watcher.stats.failed == 1


def test_the_thread_makes_a_pass_each_interval_never_at_start() -> None:
    prefect, clock = FakePrefect(), ManualClock()
    watcher = DueWorkWatcher(prefect, [Watched(DRAIN, lambda: True)], INTERVAL, clock=clock).start()
    try:
        clock.settle()
        assert prefect.created == []
        clock.advance(INTERVAL)
        assert len(prefect.created) == 1
        prefect.states["run-1"] = "COMPLETED"
        clock.advance(INTERVAL / 2)
        assert len(prefect.created) == 1
        clock.advance(INTERVAL / 2)
        assert len(prefect.created) == 2
    finally:
        watcher.stop()
    assert watcher.stats.passes == 2


def test_the_inbox_says_when_a_drain_would_find_work(inbox: Inbox) -> None:
    assert not inbox.has_due("customersdot")
    inbox.add_many([item("later")])
    with inbox.engine.begin() as conn:  # a retry whose backoff has not ended
        conn.execute(
            update(received_events).values(status="retry", next_attempt_at=utcnow() + timedelta(minutes=5))
        )
    assert not inbox.has_due("customersdot") and inbox.due_count("customersdot") == 0
    inbox.add_many([item("now")])
    assert inbox.has_due("customersdot") and not inbox.has_due(OPTOUTS)
    assert inbox.due_count("customersdot") == 1
    # Claimed: in flight under a live lease is nobody's work; once the lease ran out (its drain was
    # killed), it is due again.
    claimed = inbox.claim("customersdot", lease_seconds=300, owner="drain-1")
    assert not inbox.has_due("customersdot")
    with inbox.engine.begin() as conn:
        conn.execute(
            update(received_events)
            .where(received_events.c.id == claimed[0].id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    assert inbox.has_due("customersdot")


def test_the_ledgers_due_recheck_is_the_opt_out_drains_work(inbox: Inbox) -> None:
    settings = settings_for(str(inbox.engine.url), recipes_serve_recipes="optouts")
    [optouts] = watched_drains(settings, inbox)
    assert optouts.deployment == settings.optout_drain_deployment and not optouts.due()
    inbox.add_many([webhook_item("7", "person@example.com", "2026-01-01T00:00:00Z")])
    assert optouts.due()
    owner = "drain-1"
    [claimed] = inbox.claim(OPTOUTS, owner=owner)
    inbox.mark_skipped(claimed.id, "not in Iterable", owner=owner)
    inbox.ledger.check_later(["person@example.com"])  # looked up again in a minute: not due yet
    assert not optouts.due()
    with inbox.engine.begin() as conn:
        conn.execute(update(suppressions).values(next_check_at=utcnow() - timedelta(seconds=1)))
    assert optouts.due() and not inbox.has_due(OPTOUTS)


def test_the_receiver_watches_the_drains_of_the_recipes_it_serves(inbox: Inbox) -> None:
    url = str(inbox.engine.url)
    app = create_app(settings_for(url, due_watch_seconds=INTERVAL), inbox=inbox)
    watcher = app.state.watcher
    assert watcher is not None and watcher.interval_seconds == INTERVAL
    assert [w.deployment for w in watcher.watched] == [
        "customersdot-events/customersdot-drain",
        "marketo-opt-outs/marketo-opt-out-drain",
    ]
    app = create_app(settings_for(url, due_watch_seconds=INTERVAL, recipes_serve_recipes="sync"), inbox=inbox)
    assert app.state.watcher.watched == []
    assert create_app(settings_for(url, due_watch_seconds=0), inbox=inbox).state.watcher is None


@flow(name="watch-test-drain")
def watch_test_drain() -> int:
    return 0


def test_a_lost_nudge_is_drained_by_a_run_the_watcher_creates_in_prefect(
    prefect_server: None, inbox: Inbox
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.deployments.runner import RunnerDeployment

    deployment = watch_test_drain.to_deployment("lost-nudge")
    assert isinstance(deployment, RunnerDeployment)
    deployment_id = deployment.apply()
    settings = settings_for(
        str(inbox.engine.url),
        customersdot_drain_deployment="watch-test-drain/lost-nudge",
        recipes_serve_recipes="customersdot",
    )
    watcher = DueWorkWatcher(PrefectTrigger(), watched_drains(settings, inbox), INTERVAL, clock=StepClock())

    def runs() -> list[str]:
        with get_client(sync_client=True) as client:
            found = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
        return [str(run.id) for run in found]

    assert watcher.check() == [] and runs() == []  # nothing due: no run
    inbox.add_many([item("committed-but-never-nudged")])
    created = watcher.check()
    assert len(created) == 1 and runs() == created
    # No runner here: the run stays Scheduled (to start now), so the next passes leave it to that run.
    assert watcher.check() == [] and watcher.check() == []
    assert runs() == created and watcher.stats.active == 2
