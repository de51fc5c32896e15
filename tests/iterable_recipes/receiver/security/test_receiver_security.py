"""The receiver's security properties: no secret or email in answers and logs, constant-time comparisons,
the 5-minute window both ways, rotation, body limits (declared and streamed), 503 without the DB's URL."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from dev.standins.serving import serving
from iterable_recipes.receiver import Nudger, create_app
from iterable_recipes.settings import Settings
from iterable_recipes.store import Inbox
from tests.iterable_recipes.receiver.conftest import RecordingTrigger
from tests.iterable_recipes.receiver.security.conftest import (
    MARKETO_SECRET,
    MAX_BODY,
    NEW_SECRET,
    OLD_SECRET,
    Served,
    security_settings,
)

CDOT = "/webhooks/customersdot"
MARKETO = "/webhooks/marketo/unsubscribe"
EMAIL = "secret.person@example.com"
DB_PASSWORD = "db-password-never-shown-7c1e"
FORBIDDEN: tuple[str, ...] = (
    NEW_SECRET,
    OLD_SECRET,
    NEW_SECRET[6:],
    OLD_SECRET[6:],
    MARKETO_SECRET,
    EMAIL,
    DB_PASSWORD,
)
FORBIDDEN += ("secret.person%40example.com",)
UNKNOWN = "whsec_" + "dW5rbm93bi1zZWNyZXQtdW5rbm93bi1zZWNyZXQhIQ=="


def event(**changes: Any) -> dict[str, Any]:
    base = {
        "version": "1",
        "id": "evt-sec-1",
        "type": "saas_trial_started",
        "occurred_at": "2026-11-20T10:00:00Z",
        "person": {"email": EMAIL, "user_id": 7},
        "data": {"company": "ACME"},
    }
    return base | changes


def signed(body: bytes, secret: str = NEW_SECRET, skew: float = 0, msg_id: str = "msg-1") -> dict[str, str]:
    at = datetime.now(UTC) + timedelta(seconds=skew)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body.decode()),
        "content-type": "application/json",
    }


def raw(value: Any) -> bytes:
    return json.dumps(value).encode()


def refusals() -> Iterator[tuple[str, str, bytes, dict[str, str], int]]:
    """(name, path, body, headers, status) of requests that must be refused; each carries the email,
    and some carry a secret, in the body or the headers."""
    good = raw(event())
    yield "no signature", CDOT, good, {}, 401
    yield "signature is the secret itself", CDOT, good, signed(good) | {"webhook-signature": NEW_SECRET}, 401
    yield "signed with an unknown secret", CDOT, good, signed(good, UNKNOWN), 401
    yield "body changed after signing", CDOT, good.replace(b"ACME", b"EVIL"), signed(good), 401
    yield "an hour old", CDOT, good, signed(good, skew=-3600), 401
    yield "an hour ahead", CDOT, good, signed(good, skew=3600), 401
    unknown_type = raw(event(type=EMAIL))
    yield "unknown type named by the email", CDOT, unknown_type, signed(unknown_type), 422
    extra = raw(event(data={EMAIL: MARKETO_SECRET}))
    yield "unknown field named by the email", CDOT, extra, signed(extra), 422
    bad_values = raw(event(occurred_at=EMAIL, person={"email": EMAIL + "@" + NEW_SECRET}))
    yield "invalid values holding the email and a secret", CDOT, bad_values, signed(bad_values), 422
    not_json = f"{EMAIL} {NEW_SECRET}".encode()
    yield "not JSON", CDOT, not_json, signed(not_json), 400
    marketo = raw({"email": EMAIL, "leadId": "5", "unsubscribedAt": "now"})
    yield "Marketo: no secret", MARKETO, marketo, {}, 401
    yield "Marketo: the CustomersDot secret", MARKETO, marketo, {"X-Recipes-Secret": NEW_SECRET}, 401
    near = MARKETO_SECRET[:-1] + "x"
    yield "Marketo: one character wrong", MARKETO, marketo, {"X-Recipes-Secret": near}, 401
    invalid = raw({"email": f"{EMAIL} {MARKETO_SECRET}", "leadId": [EMAIL], "unsubscribedAt": ""})
    yield "Marketo: invalid fields", MARKETO, invalid, {"X-Recipes-Secret": MARKETO_SECRET}, 422


@pytest.mark.parametrize("name", [case[0] for case in refusals()])
def test_refusals_hold_no_secret_or_email_in_the_answer_or_the_logs(
    in_process: Served, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    # Signed now, not at collection: a long suite would otherwise send stale timestamps.
    _, path, body, headers, status = next(case for case in refusals() if case[0] == name)
    caplog.set_level(logging.DEBUG)
    answer = in_process.post(path, content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error"} and answer.json()["error"]
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "refused a" in logged  # the refusal was logged, with its reason
    for secret in FORBIDDEN:
        assert secret not in answer.text
        assert secret not in logged
    assert in_process.stored() == 0


def test_an_unreachable_database_is_a_503_without_its_url(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"postgresql+psycopg://recipes:{DB_PASSWORD}@127.0.0.1:1/recipes?connect_timeout=2"
    settings = security_settings(url)
    inbox = Inbox(url)
    nudger = Nudger(RecordingTrigger(), 0.2).start()
    caplog.set_level(logging.DEBUG)
    good = raw(event())
    try:
        with serving(create_app(settings, nudger, inbox=inbox)) as base, httpx.Client(base_url=base) as http:
            answers = [
                http.post(CDOT, content=good, headers=signed(good)),
                http.post(MARKETO, json={"email": EMAIL, "leadId": "5", "unsubscribedAt": "now"},
                          headers={"X-Recipes-Secret": MARKETO_SECRET}),
            ]  # fmt: skip
    finally:
        nudger.stop()
        inbox.dispose()
    assert [a.status_code for a in answers] == [503, 503]
    for text in [a.text for a in answers] + [caplog.text]:
        for secret in FORBIDDEN:
            assert secret not in text


@pytest.mark.parametrize(("skew", "status"), [(-330, 401), (330, 401), (-270, 202), (270, 202)])
def test_the_timestamp_window_is_five_minutes_both_ways(in_process: Served, skew: int, status: int) -> None:
    body = raw(event(id=f"evt-skew{skew}"))
    answer = in_process.post(CDOT, content=body, headers=signed(body, skew=skew, msg_id=f"m{skew}"))
    assert answer.status_code == status, answer.text
    assert in_process.stored() == (1 if status == 202 else 0)


def test_every_configured_secret_verifies_and_no_other(in_process: Served) -> None:
    statuses = []
    for n, secret in enumerate([OLD_SECRET, NEW_SECRET, UNKNOWN]):
        body = raw(event(id=f"evt-rot-{n}"))
        statuses.append(in_process.post(CDOT, content=body, headers=signed(body, secret, msg_id=f"r{n}")))
    assert [a.status_code for a in statuses] == [202, 202, 401]
    # A sender signing with old and new during its own rotation: one matching signature is enough.
    body = raw(event(id="evt-rot-both"))
    headers = signed(body, UNKNOWN, msg_id="both")
    headers["webhook-signature"] += " " + signed(body, OLD_SECRET, msg_id="both")["webhook-signature"]
    assert in_process.post(CDOT, content=body, headers=headers).status_code == 202


def test_secrets_are_compared_in_constant_time(in_process: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    original = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((len(a), len(b)))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    body = raw(event())
    in_process.post(MARKETO, content=b"{}", headers={"X-Recipes-Secret": "wrong"})
    assert calls == [(5, len(MARKETO_SECRET))]
    calls.clear()
    in_process.post(CDOT, content=body, headers=signed(body, UNKNOWN))
    assert calls == [(32, 32), (32, 32)]  # one HMAC-SHA256 comparison per configured secret


def test_declared_and_streamed_bodies_past_the_limit_are_413(database: str) -> None:
    inbox = Inbox(database)
    nudger = Nudger(RecordingTrigger(), 0.2).start()
    settings: Settings = security_settings(database)
    big = b'{"pad": "' + b"x" * MAX_BODY + b'"}'

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked, counted as it arrives
        for start in range(0, len(big), 256):
            yield big[start : start + 256]

    try:
        with serving(create_app(settings, nudger, inbox=inbox)) as base, httpx.Client(base_url=base) as http:
            marketo = {"X-Recipes-Secret": MARKETO_SECRET}
            answers = [
                http.post(CDOT, content=big, headers=signed(big)),
                http.post(CDOT, content=chunks(), headers=signed(big)),
                http.post(MARKETO, content=big, headers=marketo),
                http.post(MARKETO, content=chunks(), headers=marketo),
            ]
            fits = raw({"email": EMAIL, "leadId": "5", "unsubscribedAt": "now"})
            streamed_ok = http.post(MARKETO, content=iter([fits[:10], fits[10:]]), headers=marketo)
    finally:
        nudger.stop()
    assert [a.status_code for a in answers] == [413, 413, 413, 413]
    assert all("larger than" in a.json()["error"] for a in answers)
    assert streamed_ok.status_code == 202  # a chunked body under the limit is read whole
    assert sum(sum(s.values()) for s in inbox.counts().values()) == 1
    inbox.dispose()
