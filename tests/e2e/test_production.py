"""The production topology on this machine: Prefect server on PostgreSQL, `prefect deploy --all`, a
process worker, the receiver, the app database on PostgreSQL and the limiter in Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dev.processes import BIN, PROJECT, Processes, answers, wait_for
from dev.standins.serving import free_port
from iterable_recipes.clients.iterable_models import event_id_from
from tests.conftest import scratch_database
from tests.e2e.masking_probe import PROBE_ADDRESS
from tests.e2e.topology import deployment_runs, event_writes, switch_off_schedules
from tests.integration import WEBHOOK_SECRET, customersdot_event, signed

DRAIN = "customersdot-events/customersdot-drain"


@pytest.fixture
def prefect_database() -> Iterator[str]:
    """An own PostgreSQL database for the Prefect server (asyncpg URL), dropped afterwards."""
    with scratch_database("recipes_e2e_prefect", driver="asyncpg") as url:
        yield url


@pytest.fixture
def topology(
    tmp_path: Path, prefect_database: str, postgres_url: str, redis_prefix: str, redis_url: str
) -> Iterator[dict[str, Any]]:
    """Every production process, started like deploy/Procfile starts them; stopped afterwards."""
    prefect_port, receiver_port, iterable_port = free_port(), free_port(), free_port()
    api = f"http://127.0.0.1:{prefect_port}/api"
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": prefect_database,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
        "RECIPES_PROJECT_DIR": str(PROJECT),
        "RECIPES_DATABASE_URL": postgres_url,
        "LIMITER_BACKEND": "redis",
        "LIMITER_REDIS_URL": redis_url,
        "LIMITER_KEY_PREFIX": redis_prefix,
        "ITERABLE_API_KEY": "sandbox-key",
        "ITERABLE_BASE_URL": f"http://127.0.0.1:{iterable_port}",
        "CUSTOMERSDOT_WEBHOOK_SECRETS": WEBHOOK_SECRET,
        "NUDGE_WINDOW_SECONDS": "0.5",
    }
    (tmp_path / "logs").mkdir()
    procs = Processes(tmp_path / "logs", env)
    try:
        procs.start(
            "iterable", [str(BIN / "python"), "-m", "dev.standins.iterable", "--port", str(iterable_port)]
        )
        procs.start("prefect-server", [str(BIN / "prefect"), "server", "start", "--port", str(prefect_port)])
        wait_for("the Prefect server", lambda: answers(api + "/health"), 150, procs.log("prefect-server"))
        setup_output = procs.run([str(BIN / "recipes"), "setup"])
        deploy_output = procs.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"])
        declared = switch_off_schedules(api)
        procs.start("worker", [str(BIN / "prefect"), "worker", "start", "--pool", "recipes-process"])
        procs.start(
            "receiver", [str(BIN / "python"), "-m", "iterable_recipes.receiver", "--port", str(receiver_port)]
        )
        receiver = f"http://127.0.0.1:{receiver_port}"
        wait_for("the receiver", lambda: answers(receiver + "/healthz"), 60, procs.log("receiver"))
        yield {
            "api": api,
            "receiver": receiver,
            "iterable": env["ITERABLE_BASE_URL"],
            "procs": procs,
            "setup": setup_output,
            "deploy": deploy_output,
            "schedules": declared,
        }
    finally:
        procs.stop_all()


def _run(api: str, run_id: Any) -> Any:
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(api) as client:
        return client.read_flow_run(run_id)


def _send(receiver: str, event: dict[str, Any]) -> None:
    body, headers = signed(event)
    assert httpx.post(f"{receiver}/webhooks/customersdot", content=body, headers=headers).status_code == 202


def _log_lines(api: str, run_id: Any) -> list[str]:
    """The messages Prefect holds for one flow run."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with SyncPrefectClient(api) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return [log.message for log in logs]


def test_webhook_to_iterable_then_failed_run_retried_without_resending(topology: dict[str, Any]) -> None:
    api, receiver, iterable = topology["api"], topology["receiver"], topology["iterable"]
    procs: Processes = topology["procs"]
    assert "work pool recipes-process (process): created" in topology["setup"]
    # prefect.yaml as deployed: schedules in UTC, the process pool, one poll and one sync at a time.
    declared = topology["schedules"]
    assert declared["customersdot-drain"] == {
        "schedules": [("*/15 * * * *", "UTC")],
        "limit": None,
        "pool": "recipes-process",
        "parameters": {},
    }
    assert declared["marketo-opt-out-drain"]["limit"] is None
    assert declared["marketo-unsubscribe-poll"]["schedules"] == [("*/5 * * * *", "UTC")]
    assert declared["marketo-unsubscribe-poll"]["limit"] == 1
    sync = declared["snowflake-sync-gitlab-marketing-contacts"]
    assert (sync["limit"], sync["parameters"]) == (1, {"sync": "gitlab_marketing_contacts"})

    # A signed webhook becomes a completed flow run (on the worker) and an event in Iterable.
    first = customersdot_event()
    first_id = event_id_from("cdot", first["id"])
    _send(receiver, first)
    wait_for(
        "the first event in Iterable", lambda: event_writes(iterable, first_id) == 1, 120, procs.log("worker")
    )
    wait_for(
        "a completed drain run",
        lambda: any(r.state and r.state.is_completed() for r in deployment_runs(api, DRAIN)),
        60,
        procs.log("worker"),
    )

    # Iterable refuses the key: the drain run fails and puts the event back.
    faults = {"endpoint": "users/bulkUpdate", "fail_next": [401] * 50}
    httpx.post(f"{iterable}/_sandbox/faults", json=faults, timeout=5).raise_for_status()
    second = customersdot_event("free_registration")
    second_id = event_id_from("cdot", second["id"])
    _send(receiver, second)
    failed = wait_for(
        "a failed drain run",
        lambda: next((r for r in deployment_runs(api, DRAIN) if r.state and r.state.is_failed()), None),
        120,
        procs.log("worker"),
    )
    assert event_writes(iterable, second_id) == 0

    # The key is fixed; the operator retries that run: same run id, it completes, nothing is re-sent.
    httpx.delete(f"{iterable}/_sandbox/faults", timeout=5).raise_for_status()
    procs.run([str(BIN / "prefect"), "flow-run", "retry", str(failed.id)])
    retried = wait_for(
        "the retried run to complete",
        lambda: (run := _run(api, failed.id)).state.is_completed() and run,
        120,
        procs.log("worker"),
    )
    assert retried.run_count >= 2
    wait_for("the second event in Iterable", lambda: event_writes(iterable, second_id) >= 1, 60)
    assert event_writes(iterable, second_id) == 1
    assert event_writes(iterable, first_id) == 1
    stats = httpx.get(f"{iterable}/_sandbox/stats", timeout=5).json()
    assert stats["profile_writes"][first["person"]["email"]] == 1
    # A flow run the worker starts in a process of its own masks what it logs (it installs the
    # masker itself: no import side effect does).
    procs.run(
        [str(BIN / "prefect"), "--no-prompt", "deploy", "tests/e2e/masking_probe.py:masking_probe",
         "--name", "probe", "--pool", "recipes-process"]
    )  # fmt: skip
    procs.run([str(BIN / "prefect"), "deployment", "run", "masking-probe/probe"])
    probe = wait_for(
        "the masking probe to complete",
        lambda: next(
            (r for r in deployment_runs(api, "masking-probe/probe") if r.state and r.state.is_completed()),
            None,
        ),
        120,
        procs.log("worker"),
    )
    # Logs reach the API in batches, possibly after the run's final state.
    lines = wait_for(
        "the probe's log line",
        lambda: (found := _log_lines(api, probe.id)) and any("looked up" in x for x in found) and found,
        60,
        procs.log("worker"),
    )
    assert any("looked up p***@e***.com" in line for line in lines), lines
    assert not any(PROBE_ADDRESS in line for line in lines)
    # Nothing the receiver or the worker logged holds a raw email address.
    for name in ("receiver", "worker"):
        assert "@example.com" not in procs.log(name), name
    assert json.dumps(stats)  # the stand-in answered throughout
