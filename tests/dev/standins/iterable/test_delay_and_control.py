"""Delayed profile application, the control API over HTTP, and the standalone entry point."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from dev.standins.iterable import IterableSandbox
from dev.standins.serving import free_port
from tests.conftest import ROOT
from tests.dev.standins.iterable.users import known_user


def test_delayed_profile_is_invisible_until_applied(
    api: httpx.Client, control: httpx.Client, sandbox: IterableSandbox
) -> None:
    control.post("/options", json={"profile_delay_seconds": 60})
    api.post(
        "/users/bulkUpdate", json={"users": [{"email": "late@example.com", "dataFields": {"plan": "free"}}]}
    )
    assert api.get("/users/getByEmail", params={"email": "late@example.com"}).json() == {}
    event = {"email": "late@example.com", "eventName": "trial", "id": "late-1"}
    early = api.post("/events/trackBulk", json={"events": [event]}).json()
    assert early["failedUpdates"]["notFoundEmails"] == ["late@example.com"]
    assert control.get("/stats").json()["pending_profile_writes"] == 1

    assert control.post("/flush").json() == {"applied": 1}
    assert (
        api.get("/users/getByEmail", params={"email": "late@example.com"}).json()["user"]["dataFields"][
            "plan"
        ]
        == "free"
    )
    assert api.post("/events/trackBulk", json={"events": [event]}).json()["successCount"] == 1


def test_delayed_fields_appear_once_the_delay_passes(api: httpx.Client, sandbox: IterableSandbox) -> None:
    sandbox.seed_users([{"email": "a@example.com", "dataFields": {"plan": "free"}}])
    sandbox.set_options(profile_delay_seconds=0.3)
    api.post(
        "/users/bulkUpdate", json={"users": [{"email": "a@example.com", "dataFields": {"plan": "premium"}}]}
    )
    assert known_user(sandbox, "a@example.com")["dataFields"]["plan"] == "free"
    deadline = time.monotonic() + 5
    while known_user(sandbox, "a@example.com")["dataFields"]["plan"] != "premium":
        assert time.monotonic() < deadline, "delayed write never applied"
        time.sleep(0.05)


def test_control_api_seeds_reads_and_resets(api: httpx.Client, control: httpx.Client) -> None:
    seeded = control.post(
        "/users",
        json=[
            {"email": "s@example.com", "userId": "s-1", "dataFields": {"x": 1}, "unsubscribedChannelIds": [1]}
        ],
    )
    assert seeded.json() == {"seeded": 1}
    user = control.get("/users/s@example.com").json()
    assert (
        user["userId"] == "s-1" and user["dataFields"] == {"x": 1} and user["unsubscribedChannelIds"] == [1]
    )
    assert control.get("/users/nobody@example.com").status_code == 404
    assert [item["email"] for item in control.get("/users").json()] == ["s@example.com"]
    assert control.post("/users", json=[{"email": "x@example.com", "bogus": 1}]).status_code == 422

    api.post(
        "/events/trackBulk", json={"events": [{"email": "s@example.com", "eventName": "e", "id": "c-1"}]}
    )
    assert list(control.get("/events").json()) == ["c-1"]
    stats = control.get("/stats").json()
    assert stats["requests"]["events/trackBulk"] == {"200": 1}
    assert stats["event_writes"] == {"c-1": 1}

    control.post("/options", json={"profile_delay_seconds": 5})
    assert control.post("/reset").status_code == 200
    assert control.get("/users").json() == []
    assert control.get("/options").json()["profile_delay_seconds"] == 0.0


def test_module_serves_standalone() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dev.standins.iterable", "--port", str(port), "--no-limits"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{port}/api/channels", headers={"Api-Key": "sandbox-key"}
                )
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "standalone sandbox never answered"
                time.sleep(0.1)
        assert response.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/_sandbox/options").json()["limits_enabled"] is False
    finally:
        process.terminate()
        process.wait(timeout=10)
