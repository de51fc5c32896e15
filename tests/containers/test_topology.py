"""The receiver and the worker as containers of the image, on the host network, against a Prefect server
on PostgreSQL, the app database on PostgreSQL, the limiter in Redis and the Iterable stand-in (host
processes); then the worker container killed mid-drain and a second one finishing the work.

compose.yaml is not run here: its postgres, redis and prefect services need images from a registry, which
these machines cannot pull, so the same two services are started with the equivalent podman commands.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dev.processes import BIN, PROJECT, Processes, answers, wait_for
from dev.standins.serving import free_port
from iterable_recipes.clients.iterable_models import event_id_from
from iterable_recipes.store import Inbox
from tests.conftest import scratch_database
from tests.containers.conftest import TIMINGS, Image, Secrets
from tests.containers.podman import Containers
from tests.e2e.topology import deployment_runs, event_writes, switch_off_schedules
from tests.integration import customersdot_event, signed

DRAIN = "customersdot-events/customersdot-drain"
OPTOUT_DRAIN = "marketo-opt-outs/marketo-opt-out-drain"
# Short enough that the killed drain's claims come back within the test, long beside one batch's send.
LEASE_SECONDS = 20
HELD_EVENTS = 12
# The worker as deploy/compose.yaml runs it (checked below), plus a name per container.
WORKER = ["prefect", "worker", "start", "--pool", "recipes-process"]


@pytest.fixture
def topology(
    tmp_path: Path,
    image: Image,
    configured_secrets: Secrets,
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
) -> Iterator[dict[str, Any]]:
    """Host: Prefect server (PostgreSQL), stand-in, `recipes setup`, `deploy --all`. Containers: the
    receiver (the image's own CMD) and worker 1."""
    started = time.monotonic()
    prefect_port, receiver_port, iterable_port = free_port(), free_port(), free_port()
    api = f"http://127.0.0.1:{prefect_port}/api"
    iterable = f"http://127.0.0.1:{iterable_port}"
    app = {
        "PREFECT_API_URL": api,
        "RECIPES_DATABASE_URL": postgres_url,
        "LIMITER_BACKEND": "redis",
        "LIMITER_REDIS_URL": redis_url,
        "LIMITER_KEY_PREFIX": redis_prefix,
        "ITERABLE_API_KEY": configured_secrets.iterable_api_key,
        "ITERABLE_BASE_URL": iterable,
        "CUSTOMERSDOT_WEBHOOK_SECRETS": configured_secrets.customersdot,
        "MARKETO_WEBHOOK_SECRET": configured_secrets.marketo,
        "NUDGE_WINDOW_SECONDS": "0.5",
        "INBOX_LEASE_SECONDS": str(LEASE_SECONDS),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
        "RECEIVER_PORT": str(receiver_port),
    }
    # Secrets reach the containers through a file, not their command lines.
    env_file = tmp_path / "containers.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in app.items()))
    env_file.chmod(0o600)
    host = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | app
    host |= {
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "RECIPES_PROJECT_DIR": str(PROJECT),
    }
    (tmp_path / "logs").mkdir()
    with scratch_database("recipes_containers_prefect", driver="asyncpg") as prefect_db:
        procs = Processes(tmp_path / "logs", host | {"PREFECT_SERVER_DATABASE_CONNECTION_URL": prefect_db})
        containers = Containers(
            image.tag, f"recipes-test-{uuid.uuid4().hex[:6]}", env_file, tmp_path / "logs"
        )
        try:
            procs.start(
                "iterable",
                [str(BIN / "python"), "-m", "dev.standins.iterable", "--port", str(iterable_port),
                 "--api-key", configured_secrets.iterable_api_key],
            )  # fmt: skip
            procs.start(
                "prefect-server", [str(BIN / "prefect"), "server", "start", "--port", str(prefect_port)]
            )
            wait_for("the Prefect server", lambda: answers(api + "/health"), 150, procs.log("prefect-server"))
            procs.run([str(BIN / "recipes"), "setup"])
            # Deployed from the checkout, but `prefect deploy` resolves the pull step's
            # {{ $RECIPES_PROJECT_DIR }} itself: it must name the image's /app, where runs start.
            procs.env["RECIPES_PROJECT_DIR"] = "/app"
            procs.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], timeout=300)
            switch_off_schedules(api)
            receiver = containers.start("receiver")
            worker = containers.start("worker-1", *WORKER, "--name", "container-1")
            url = f"http://127.0.0.1:{receiver_port}"
            wait_for(
                "the receiver container", lambda: answers(url + "/healthz"), 90, containers.log(receiver)
            )
            yield {
                "api": api,
                "receiver": url,
                "receiver_container": receiver,
                "worker": worker,
                "iterable": iterable,
                "procs": procs,
                "containers": containers,
                "inbox": Inbox(postgres_url),
                "started": started,
            }
        finally:
            containers.remove_all()
            procs.stop_all()


def _healthcheck(containers: Containers, name: str, image: str) -> int:
    """Run the image's HEALTHCHECK command in the container (podman runs none itself without systemd)."""
    from tests.containers.podman import podman

    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    kind, *command = (inspected.get("Healthcheck") or inspected["Config"]["Healthcheck"])["Test"]
    argv = ["sh", "-c", command[0]] if kind == "CMD-SHELL" else command
    return containers.exec(name, *argv).returncode


def _open(inbox: Inbox, source: str) -> dict[str, int]:
    counts = inbox.counts(source).get(source, {})
    return {s: n for s, n in counts.items() if s != "delivered" and n}


def test_receiver_and_worker_containers_deliver_and_a_killed_worker_loses_nothing(
    topology: dict[str, Any], image: Image, configured_secrets: Secrets
) -> None:
    receiver, iterable, api = topology["receiver"], topology["iterable"], topology["api"]
    containers: Containers = topology["containers"]
    inbox: Inbox = topology["inbox"]
    worker = topology["worker"]
    assert _healthcheck(containers, topology["receiver_container"], image.tag) == 0

    # A signed CustomersDot event, through the receiver container and a drain run in the worker's.
    first = customersdot_event()
    body, headers = signed(first, configured_secrets.customersdot)
    assert httpx.post(f"{receiver}/webhooks/customersdot", content=body, headers=headers).status_code == 202
    first_id = event_id_from("cdot", first["id"])
    wait_for(
        "the first event in Iterable",
        lambda: event_writes(iterable, first_id) == 1,
        180,
        containers.log(worker),
    )

    # A Marketo unsubscribe of a person Iterable knows: opted out of marketing email by the opt-out drain.
    email = f"optout-{uuid.uuid4().hex[:8]}@example.com"
    seed = [{"email": email, "subscribedMessageTypeIds": [101]}]
    httpx.post(f"{iterable}/_sandbox/users", json=seed, timeout=10).raise_for_status()
    unsubscribe = {"leadId": 4242, "email": email, "unsubscribedAt": "2026-11-20T10:00:00+00:00"}
    answer = httpx.post(
        f"{receiver}/webhooks/marketo/unsubscribe",
        json=unsubscribe,
        headers={"X-Recipes-Secret": configured_secrets.marketo},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    wait_for(
        "the opt-out in Iterable",
        lambda: (
            1 in httpx.get(f"{iterable}/_sandbox/users/{email}", timeout=5).json()["unsubscribedChannelIds"]
        ),
        180,
        containers.log(worker),
    )
    stats = httpx.get(f"{iterable}/_sandbox/stats", timeout=5).json()
    assert stats["subscription_writes"] == {email: 1}
    # The write lands before the run that made it reports Completed: wait for the state, do not race it.
    wait_for(
        "the opt-out drain's run to complete",
        lambda: any(r.state and r.state.is_completed() for r in deployment_runs(api, OPTOUT_DRAIN)),
        60,
        containers.log(worker),
    )

    # Iterable stalls; a burst is claimed by a drain in worker 1, whose container is then killed.
    httpx.post(f"{iterable}/_sandbox/hold", timeout=5).raise_for_status()
    events = [customersdot_event() for _ in range(HELD_EVENTS)]
    ids = [event_id_from("cdot", e["id"]) for e in events]
    for event in events:
        body, headers = signed(event, configured_secrets.customersdot)
        assert (
            httpx.post(f"{receiver}/webhooks/customersdot", content=body, headers=headers).status_code == 202
        )
    wait_for(
        "the burst claimed by worker 1's drain",
        lambda: _open(inbox, "customersdot").get("in_flight", 0) == HELD_EVENTS,
        180,
        containers.log(worker),
    )
    time.sleep(2)  # its first request reaches the stand-in, which holds it
    containers.kill(worker)
    assert not containers.running(worker)
    killed_at = time.monotonic()
    in_flight_at_kill = _open(inbox, "customersdot")
    assert in_flight_at_kill == {"in_flight": HELD_EVENTS}
    httpx.post(f"{iterable}/_sandbox/release", timeout=5).raise_for_status()
    assert all(event_writes(iterable, i) == 0 for i in ids), (
        "the kill came mid-drain, before any event was tracked"
    )

    # Worker 2 (a new container of the same image) takes the claims back once their lease runs out.
    second = containers.start("worker-2", *WORKER, "--name", "container-2")
    time.sleep(max(0.0, LEASE_SECONDS + 1 - (time.monotonic() - killed_at)))
    topology["procs"].run([str(BIN / "prefect"), "deployment", "run", DRAIN])
    wait_for(
        "every held event in Iterable",
        lambda: all(event_writes(iterable, i) >= 1 for i in ids),
        240,
        containers.log(second),
    )
    wait_for("the inbox to empty", lambda: not _open(inbox, "customersdot"), 60, containers.log(second))
    # Nothing lost, nothing duplicated: one write per event id (the killed drain never reached trackBulk);
    # profiles re-sent at most once, only for the batch that was in flight at the kill.
    assert {i: event_writes(iterable, i) for i in ids} == dict.fromkeys(ids, 1)
    assert event_writes(iterable, first_id) == 1
    stats = httpx.get(f"{iterable}/_sandbox/stats", timeout=5).json()
    profile_writes = [stats["profile_writes"].get(e["person"]["email"], 0) for e in events]
    assert all(1 <= n <= 2 for n in profile_writes), profile_writes
    assert stats["events"] == HELD_EVENTS + 1
    # Nothing either container printed holds a raw email address.
    for name in (topology["receiver_container"], worker, second):
        assert "@example.com" not in containers.log(name), name
    inbox.dispose()
    TIMINGS["topology"] = (
        f"{time.monotonic() - topology['started']:.0f} s (setup, both recipes, kill, recovery)"
    )


def test_compose_file_runs_the_same_services() -> None:
    """compose.yaml's receiver and worker are this test's: one image of deploy/Dockerfile, its CMD for
    the receiver, the same worker command, PostgreSQL and Redis for the app."""
    import yaml

    services = yaml.safe_load((PROJECT / "deploy" / "compose.yaml").read_text())["services"]
    receiver, worker = services["receiver"], services["worker"]
    assert receiver["build"]["dockerfile"] == worker["build"]["dockerfile"] == "deploy/Dockerfile"
    assert receiver["image"] == worker["image"]
    assert "command" not in receiver
    assert worker["command"].split() == WORKER
    assert worker["environment"]["LIMITER_BACKEND"] == "redis"
    assert worker["environment"]["RECIPES_DATABASE_URL"].startswith("postgresql+psycopg://")
