from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest

from tests.iterable_recipes.receiver.conftest import OLD_SECRET, Receiver, dumps, sign, trial

PATH = "/webhooks/customersdot"


def post(receiver: Receiver, body: str | bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(receiver.url + PATH, content=body, headers=headers, timeout=10)


def test_accepts_stores_and_nudges_the_drain(receiver: Receiver) -> None:
    body = dumps(trial())
    answer = post(receiver, body, sign(body, "msg-1"))
    assert answer.status_code == 202
    item = receiver.inbox.get(answer.json()["id"])
    assert item is not None and item.status == "pending" and item.source_id == "evt-1"
    assert item.payload is not None and item.payload["person"]["email"] == "person@example.com"
    assert item.webhook_id == "customersdot:msg-1"
    receiver.nudger.stop()
    assert [c[0] for c in receiver.trigger.calls] == ["customersdot-events/customersdot-drain"]


def test_a_repeat_by_webhook_id_or_event_id_answers_200_and_is_stored_once(receiver: Receiver) -> None:
    body = dumps(trial())
    first = post(receiver, body, sign(body, "msg-1"))
    same_request = post(receiver, body, sign(body, "msg-1"))
    same_event_new_delivery = post(receiver, body, sign(body, "msg-2"))
    assert first.status_code == 202
    assert same_request.status_code == same_event_new_delivery.status_code == 200
    assert same_request.json()["id"] == same_event_new_delivery.json()["id"] == first.json()["id"]
    assert receiver.stored() == 1


def test_an_old_secret_still_verifies_during_rotation(receiver: Receiver) -> None:
    body = dumps(trial())
    assert post(receiver, body, sign(body, "msg-1", secret=OLD_SECRET)).status_code == 202


def test_personal_registrations_are_stored_as_skipped_and_not_nudged(receiver: Receiver) -> None:
    event = trial() | {"type": "free_registration", "data": {"registration_kind": "personal"}}
    body = dumps(event)
    answer = post(receiver, body, sign(body, "msg-1"))
    assert answer.status_code == 202
    item = receiver.inbox.get(answer.json()["id"])
    assert item is not None and item.status == "skipped"
    receiver.nudger.stop()
    assert receiver.trigger.calls == []


GOOD = dumps(trial())


def bad_requests() -> list[tuple[str | bytes, dict[str, str], int, str]]:
    """(body, headers, status, reason) of refused requests, signed when called (not at collection)."""
    return [
        (GOOD, {**sign(GOOD, "m"), "webhook-signature": "v1,AAAA"}, 401, "signature does not match"),
        (GOOD, {**sign(GOOD, "m"), "webhook-signature": "garbage"}, 401, "malformed webhook-signature"),
        (GOOD, sign(GOOD, "m", secret="whsec_" + "QUJD" * 8), 401, "signature does not match"),
        (GOOD, {k: v for k, v in sign(GOOD, "m").items() if k != "webhook-id"}, 401, "webhook-id"),
        (GOOD, sign(GOOD, "m", at=datetime.now(UTC) - timedelta(minutes=20)), 401, "5-minute window"),
        (GOOD, sign(GOOD, "m", at=datetime.now(UTC) + timedelta(minutes=20)), 401, "5-minute window"),
        (GOOD, {**sign(GOOD, "m"), "webhook-timestamp": "soon"}, 401, "5-minute window"),
        ('{"version": "1", ', sign('{"version": "1", ', "m"), 400, "Invalid JSON"),
        ("[1, 2]", sign("[1, 2]", "m"), 422, "body"),
        (
            dumps(trial() | {"type": "nope"}),
            sign(dumps(trial() | {"type": "nope"}), "m"),
            422,
            "unknown event type",
        ),
        (dumps(trial() | {"person": {}}), sign(dumps(trial() | {"person": {}}), "m"), 422, "person.email"),
        ("x" * 5000, sign("x" * 5000, "m"), 413, "larger than 4096"),
        (b"\xff\xfe", {**sign("", "m")}, 400, "not UTF-8"),
    ]


@pytest.mark.parametrize("index", range(len(bad_requests())), ids=[f"{c[2]}-{c[3]}" for c in bad_requests()])
def test_bad_requests_get_a_clear_4xx_and_nothing_is_stored(receiver: Receiver, index: int) -> None:
    body, headers, status, reason = bad_requests()[index]
    answer = post(receiver, body, headers)
    assert answer.status_code == status
    assert reason in answer.json()["error"]
    assert "person@example.com" not in answer.text
    assert receiver.stored() == 0


def test_an_email_in_a_bad_field_is_not_echoed(receiver: Receiver) -> None:
    body = dumps(trial() | {"type": "leak@example.com", "leak@example.com": 1})
    answer = post(receiver, body, sign(body, "m"))
    assert answer.status_code == 422
    assert "leak@example.com" not in answer.text


def test_an_oversized_chunked_body_without_content_length_is_refused(receiver: Receiver) -> None:
    """Content-Length can be absent (chunked) or lie; the bytes actually read are counted too."""
    parts = urlsplit(receiver.url)
    chunk = b"x" * 1000
    request = (
        (
            f"POST {PATH} HTTP/1.1\r\nHost: {parts.hostname}\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: application/json\r\nConnection: close\r\n\r\n"
        ).encode()
        + (b"3e8\r\n" + chunk + b"\r\n") * 5
        + b"0\r\n\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"larger than 4096" in answer
    assert receiver.stored() == 0


def test_other_paths_and_methods_answer_json_errors(receiver: Receiver) -> None:
    assert httpx.get(receiver.url + PATH).status_code == 405
    missing = httpx.get(receiver.url + "/nope")
    assert missing.status_code == 404 and "error" in missing.json()


def test_healthz_and_openapi_publish_the_contract(receiver: Receiver) -> None:
    health = httpx.get(receiver.url + "/healthz")
    assert health.status_code == 200 and health.json() == {"database": "ok", "prefect": "ok"}
    spec = httpx.get(receiver.url + "/openapi.json").json()
    body = spec["paths"][PATH]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["discriminator"]["propertyName"] == "type"
    assert "SaasTrialStarted" in spec["components"]["schemas"]
