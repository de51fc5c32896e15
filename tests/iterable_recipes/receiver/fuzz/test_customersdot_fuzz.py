"""Fuzz POST /webhooks/customersdot: 4xx for bad input, nothing stored when refused, never a 500."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from tests.iterable_recipes.receiver.fuzz.conftest import (
    CUSTOMERSDOT,
    FUZZ,
    NEW_SECRET,
    OLD_SECRET,
    SECRET_TEXTS,
    UNKNOWN_SECRET,
    Target,
)
from tests.iterable_recipes.receiver.fuzz.strategies import (
    bodies,
    encode,
    event,
    mutated_events,
    signature_headers,
)

ACCEPTED = {200, 202}


def sign(body: bytes, msg_id: str, secret: str = NEW_SECRET, skew: float = 0) -> dict[str, str | bytes]:
    """Standard Webhooks headers for ``body``, the timestamp ``skew`` seconds from now."""
    at = datetime.now(UTC) + timedelta(seconds=skew)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body.decode("utf-8", "replace")),
        "content-type": "application/json",
    }


def assert_refused(target: Target, answer_text: str, status: int, before: int) -> None:
    """A clean refusal: a 4xx with a JSON reason, no secret in it, and nothing stored."""
    assert 400 <= status < 500, (status, answer_text)
    assert answer_text.startswith('{"error": '), answer_text
    assert not any(secret in answer_text for secret in SECRET_TEXTS)
    assert target.stored() == before


@FUZZ
@given(body=bodies, headers=signature_headers())
def test_unsigned_or_forged_requests_are_refused(
    target: Target, body: bytes, headers: dict[str, str | bytes]
) -> None:
    before = target.stored()
    answer = target.post(CUSTOMERSDOT, body, headers)
    assert_refused(target, answer.text, answer.status_code, before)


@FUZZ
@given(body=bodies, secret=st.sampled_from([NEW_SECRET, OLD_SECRET]))
def test_signed_bodies_are_stored_once_or_refused_cleanly(target: Target, body: bytes, secret: str) -> None:
    before = target.stored()
    answer = target.post(CUSTOMERSDOT, body, sign(body, f"msg-{uuid.uuid4().hex}", secret))
    if answer.status_code == 202:
        assert target.stored() == before + 1
    elif answer.status_code == 200:  # a near-valid event may repeat an earlier event's id
        assert answer.json()["duplicate"] is True and target.stored() == before
    else:
        assert answer.status_code in {400, 413, 422}, answer.text
        assert_refused(target, answer.text, answer.status_code, before)
        assert b"fuzz@example.com" not in answer.content


@FUZZ
@given(
    event_body=mutated_events() | st.just(event()),
    tamper=st.sampled_from(
        ["body", "id", "timestamp", "unknown_secret", "old", "new", "drop", "version", "append"]
    ),
    skew=st.integers(-3600, 3600),
)
def test_tampered_or_stale_signatures_are_refused(
    target: Target, event_body: dict, tamper: str, skew: int
) -> None:
    event_body["id"] = f"evt-{uuid.uuid4().hex}"
    body = encode(event_body)
    msg_id = f"msg-{uuid.uuid4().hex}"
    headers = sign(body, msg_id, UNKNOWN_SECRET if tamper == "unknown_secret" else NEW_SECRET)
    if tamper == "body":
        body = body[:-1] + bytes([body[-1] ^ 0x01])
    elif tamper == "id":
        headers["webhook-id"] = msg_id + "x"
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = str(int(str(headers["webhook-timestamp"])) + (skew or 1))
    elif tamper in {"old", "new"}:
        # Correctly signed, but at least 5.5 minutes in the past ("old") or the future ("new").
        offset = 330 + abs(skew)
        headers = sign(body, msg_id, OLD_SECRET, -offset if tamper == "old" else offset)
    elif tamper == "drop":
        headers.pop(["webhook-id", "webhook-timestamp", "webhook-signature"][abs(skew) % 3])
    elif tamper == "version":
        headers["webhook-signature"] = "v2," + str(headers["webhook-signature"]).split(",", 1)[1]
    else:
        body += b" "
    before = target.stored()
    answer = target.post(CUSTOMERSDOT, body, headers)
    assert answer.status_code in {400, 401}, answer.text
    assert_refused(target, answer.text, answer.status_code, before)


@FUZZ
@given(skew=st.integers(-270, 270), secret=st.sampled_from([NEW_SECRET, OLD_SECRET]))
def test_timestamps_inside_the_window_are_accepted_with_either_secret(
    target: Target, skew: int, secret: str
) -> None:
    body = encode(event())
    before = target.stored()
    answer = target.post(CUSTOMERSDOT, body, sign(body, f"msg-{uuid.uuid4().hex}", secret, skew))
    assert answer.status_code == 202, answer.text
    assert target.stored() == before + 1


@FUZZ
@given(
    repeats=st.integers(2, 4),
    same_webhook_id=st.booleans(),
    secrets=st.lists(st.sampled_from([NEW_SECRET, OLD_SECRET]), min_size=4, max_size=4),
    kind=st.sampled_from(["saas_trial_started", "free_registration", "namespace_user_invited"]),
)
def test_a_repeated_signed_request_is_stored_once(
    target: Target, repeats: int, same_webhook_id: bool, secrets: list[str], kind: str
) -> None:
    body = encode(event(kind))
    shared = f"msg-{uuid.uuid4().hex}"
    before = target.stored()
    answers = [
        target.post(
            CUSTOMERSDOT,
            body,
            sign(body, shared if same_webhook_id else f"msg-{uuid.uuid4().hex}", secrets[n], skew=-n),
        )
        for n in range(repeats)
    ]
    assert [a.status_code for a in answers] == [202] + [200] * (repeats - 1)
    assert len({a.json()["id"] for a in answers}) == 1
    assert target.stored() == before + 1
