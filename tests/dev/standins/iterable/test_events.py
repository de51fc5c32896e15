"""events/track and events/trackBulk: upsert by id, write counting, unknown users reported not created."""

from __future__ import annotations

from typing import Any

import httpx

from dev.standins.iterable import IterableSandbox
from tests.dev.standins.iterable.spec import assert_matches


def test_track_answers_envelope_with_id(api: httpx.Client, sandbox: IterableSandbox) -> None:
    sandbox.seed_users([{"email": "t@example.com"}])
    response = api.post("/events/track", json={"email": "t@example.com", "eventName": "trial", "id": "evt-1"})
    assert response.status_code == 200
    body = response.json()
    assert_matches("IterableApiResponse", body)
    assert body["code"] == "Success" and body["params"] == {"id": "evt-1"}
    generated = api.post("/events/track", json={"email": "t@example.com", "eventName": "trial"}).json()
    assert generated["params"]["id"] and generated["params"]["id"] != "evt-1"
    assert set(sandbox.events()) == {"evt-1", generated["params"]["id"]}
    unknown = api.post("/events/track", json={"email": "who@example.com", "eventName": "trial"})
    assert unknown.status_code == 400 and unknown.json()["code"] == "UnknownEmailError"


def test_track_bulk_resend_updates_and_counts_writes(api: httpx.Client, sandbox: IterableSandbox) -> None:
    sandbox.seed_users([{"email": "a@example.com"}, {"email": "b@example.com", "userId": "b-1"}])
    batch: dict[str, list[dict[str, Any]]] = {
        "events": [
            {"email": "a@example.com", "eventName": "trial", "id": "src-1", "dataFields": {"plan": "free"}},
            {"userId": "b-1", "eventName": "trial", "id": "src-2"},
            {"email": "a@example.com", "eventName": "invite"},
        ]
    }
    first = api.post("/events/trackBulk", json=batch)
    assert first.status_code == 200
    assert_matches("BulkTrackResponse", first.json())
    assert first.json()["successCount"] == 3 and first.json()["failCount"] == 0

    batch["events"][0]["dataFields"] = {"plan": "premium"}
    api.post("/events/trackBulk", json={"events": batch["events"][:2]})
    events = sandbox.events()
    assert len(events) == 3  # re-sent ids updated in place; the id-less event got its own id
    assert events["src-1"]["dataFields"] == {"plan": "premium"}
    assert events["src-2"]["email"] == "b@example.com"
    writes = sandbox.stats()["event_writes"]
    assert writes["src-1"] == 2 and writes["src-2"] == 2
    assert sorted(writes.values()) == [1, 2, 2]


def test_track_bulk_reports_unknown_and_invalid_users_without_creating(
    api: httpx.Client, sandbox: IterableSandbox
) -> None:
    sandbox.seed_users([{"email": "known@example.com"}])
    response = api.post(
        "/events/trackBulk",
        json={
            "events": [
                {"email": "known@example.com", "eventName": "e", "id": "k-1"},
                {"email": "stranger@example.com", "eventName": "e", "id": "k-2"},
                {"userId": "nobody", "eventName": "e", "id": "k-3"},
                {"email": "broken", "eventName": "e", "id": "k-4"},
            ]
        },
    )
    body = response.json()
    assert_matches("BulkTrackResponse", body)
    assert body["successCount"] == 1 and body["failCount"] == 3
    assert body["failedUpdates"]["notFoundEmails"] == ["stranger@example.com"]
    assert body["failedUpdates"]["notFoundUserIds"] == ["nobody"]
    assert body["failedUpdates"]["invalidEmails"] == ["broken"]
    assert set(sandbox.events()) == {"k-1"}
    assert sandbox.stats()["users"] == 1


def test_event_field_type_clash_fails_batch(api: httpx.Client, sandbox: IterableSandbox) -> None:
    sandbox.seed_users([{"email": "a@example.com"}])
    api.post(
        "/events/trackBulk",
        json={"events": [{"email": "a@example.com", "eventName": "e", "dataFields": {"n": 1}}]},
    )
    response = api.post(
        "/events/trackBulk",
        json={
            "events": [
                {"email": "a@example.com", "eventName": "e", "id": "ok-1", "dataFields": {"n": 2}},
                {"email": "a@example.com", "eventName": "e", "id": "bad-1", "dataFields": {"n": "two"}},
            ]
        },
    )
    assert response.status_code == 400 and response.json()["code"] == "RequestFieldsTypesMismatched"
    assert "ok-1" not in sandbox.events()


def test_invalid_event_id_is_refused(api: httpx.Client, sandbox: IterableSandbox) -> None:
    sandbox.seed_users([{"email": "a@example.com"}])
    response = api.post(
        "/events/trackBulk", json={"events": [{"email": "a@example.com", "eventName": "e", "id": "a_b"}]}
    )
    assert response.status_code == 400
    assert sandbox.events() == {}
