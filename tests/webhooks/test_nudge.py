from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prefect import flow

from inbox import Inbox, migrate
from sandbox.serving import free_port, serving
from tests.webhooks.conftest import dumps, settings_for, sign, trial
from webhooks import Nudger, PrefectTrigger, create_app

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
