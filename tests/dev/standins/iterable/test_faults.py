"""Injected faults: scripted statuses, random errors, outages, dropped connections and held answers."""

from __future__ import annotations

import time

import httpx
import pytest

from dev.standins.iterable import IterableSandbox


def test_fail_next_answers_scripted_statuses_then_recovers(
    api: httpx.Client, sandbox: IterableSandbox
) -> None:
    sandbox.set_faults(endpoint="users/bulkUpdate", fail_next=[503, 429, 500], retry_after=7)
    statuses = [api.post("/users/bulkUpdate", json={"users": []}) for _ in range(4)]
    assert [r.status_code for r in statuses] == [503, 429, 500, 200]
    assert statuses[1].text == "Rate limit exceeded. Please try again later."
    assert statuses[1].headers["retry-after"] == "7"
    assert statuses[2].json()["code"] == "GenericError"
    # Another endpoint is untouched by an endpoint's faults.
    assert api.get("/channels").status_code == 200


def test_error_rate_is_reproducible_with_a_seed(api: httpx.Client, sandbox: IterableSandbox) -> None:
    def run() -> list[int]:
        sandbox.set_faults(error_rate=0.5, seed=42)
        return [api.get("/channels").status_code for _ in range(30)]

    first, second = run(), run()
    assert first == second
    assert set(first) - {200} <= {500, 502, 503}
    assert 200 in first and set(first) != {200}


def test_rate_429_fault_is_plain_text(api: httpx.Client, sandbox: IterableSandbox) -> None:
    sandbox.set_faults(rate_429=1.0)
    response = api.get("/messageTypes")
    assert response.status_code == 429
    assert response.headers["content-type"].startswith("text/plain")
    assert "retry-after" in response.headers


def test_outage_window_answers_503_until_it_ends(api: httpx.Client, sandbox: IterableSandbox) -> None:
    sandbox.set_faults(outage_seconds=0.5)
    during = api.get("/channels")
    assert during.status_code == 503
    assert int(during.headers["retry-after"]) >= 1
    deadline = time.monotonic() + 5
    while api.get("/channels").status_code == 503:
        assert time.monotonic() < deadline, "outage never ended"
        time.sleep(0.1)
    sandbox.set_faults(outage_seconds=60)
    assert api.get("/channels").status_code == 503
    sandbox.clear_faults()
    assert api.get("/channels").status_code == 200


def test_dropped_connection_gets_no_answer_and_writes_nothing(
    api: httpx.Client, sandbox: IterableSandbox
) -> None:
    sandbox.set_faults(endpoint="users/bulkUpdate", drop_rate=1.0)
    with pytest.raises(httpx.TransportError):
        api.post("/users/bulkUpdate", json={"users": [{"email": "a@example.com", "dataFields": {}}]})
    assert sandbox.user("a@example.com") is None
    assert sandbox.stats()["requests"]["users/bulkUpdate"] == {"dropped": 1}
    sandbox.clear_faults()
    assert api.post("/users/bulkUpdate", json={"users": []}).status_code == 200


def test_timeout_holds_the_answer_but_applies_the_write(api: httpx.Client, sandbox: IterableSandbox) -> None:
    sandbox.seed_users([{"email": "a@example.com"}])
    sandbox.set_faults(endpoint="events/trackBulk", fail_next=["timeout"], hang_seconds=20)
    event = {"email": "a@example.com", "eventName": "trial", "id": "held-1"}
    with pytest.raises(httpx.ReadTimeout):
        api.post("/events/trackBulk", json={"events": [event]}, timeout=0.5)
    # Iterable did the work; only the answer was lost, so the re-send must update, not duplicate.
    assert api.post("/events/trackBulk", json={"events": [event]}).json()["successCount"] == 1
    assert sandbox.stats()["event_writes"] == {"held-1": 2}
    assert len(sandbox.events()) == 1
    deadline = time.monotonic() + 5
    while "hung" not in sandbox.stats()["requests"]["events/trackBulk"]:
        assert time.monotonic() < deadline, "held request never noticed the client leaving"
        time.sleep(0.05)


def test_fail_next_drop_entry(api: httpx.Client, sandbox: IterableSandbox) -> None:
    sandbox.set_faults(fail_next=["drop"])
    with pytest.raises(httpx.TransportError):
        api.get("/channels")
    assert api.get("/channels").status_code == 200


def test_faults_over_the_control_api(
    api: httpx.Client, control: httpx.Client, sandbox: IterableSandbox
) -> None:
    installed = control.post(
        "/faults", json=[{"endpoint": "channels", "fail_next": [502]}, {"latency_seconds": 0.01}]
    )
    assert installed.status_code == 200 and len(installed.json()) == 2
    response = api.get("/channels")
    assert response.status_code == 502 and response.text == "Bad Gateway"
    assert control.post("/faults", json={"error_rte": 0.5}).status_code == 422  # misspelt names are refused
    assert control.delete("/faults").status_code == 200
    assert control.get("/faults").json() == []


def test_fail_next_answers_a_scripted_body_without_handling_the_request(
    api: httpx.Client, sandbox: IterableSandbox
) -> None:
    # Shapes the spec does not promise but a proxy or a bad deploy can send: a client must not read
    # them as "not found" or "accepted".
    shape = {"code": "BadParams", "msg": "Something went wrong"}
    sandbox.set_faults(endpoint="users/bulkUpdate", fail_next=[{"body": shape}, {"status": 400, "body": []}])
    first = api.post("/users/bulkUpdate", json={"users": [{"email": "a@example.com"}]})
    assert first.status_code == 200 and first.json() == shape
    second = api.post("/users/bulkUpdate", json={"users": [{"email": "a@example.com"}]})
    assert second.status_code == 400 and second.json() == []
    # Neither was handled: nothing was written.
    assert sandbox.users() == []
    assert api.post("/users/bulkUpdate", json={"users": []}).status_code == 200
    assert sandbox.stats()["requests"]["users/bulkUpdate"] == {"200": 2, "400": 1}
