"""The receiver's own Standard Webhooks check says what the ``standardwebhooks`` library says, case by
case, with the five-minute window read from an injected clock."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from iterable_recipes.receiver.errors import Rejected
from iterable_recipes.receiver.signature import TOLERANCE_SECONDS, Verifier

SECRET = "whsec_" + base64.b64encode(b"signature-test-secret-32-bytes!!").decode()
OTHER = "whsec_" + base64.b64encode(b"another-secret-of-thirty-two-by!").decode()
BODY = b'{"id":"evt-1","type":"saas_trial_started"}'
NOW = 1_750_000_000.0


def headers(
    at: float = NOW, secret: str = SECRET, body: bytes = BODY, msg_id: str = "msg-1"
) -> dict[str, str]:
    """Headers the library's own signer writes for ``body``."""
    stamp = datetime.fromtimestamp(at, tz=UTC)
    signature = Webhook(secret).sign(msg_id, stamp, body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(at)), "webhook-signature": signature}


def at(seconds: float) -> Callable[[], float]:
    """A clock stopped at ``seconds``."""
    return lambda: seconds


def test_a_request_the_library_signed_is_accepted_and_its_id_returned() -> None:
    assert Verifier([SECRET], clock=at(NOW)).verify(BODY, headers()) == "msg-1"


@pytest.mark.parametrize("skew", [-TOLERANCE_SECONDS, TOLERANCE_SECONDS])
def test_the_window_edges_are_inside(skew: float) -> None:
    assert Verifier([SECRET], clock=at(NOW + skew)).verify(BODY, headers()) == "msg-1"


@pytest.mark.parametrize("skew", [-TOLERANCE_SECONDS - 1, TOLERANCE_SECONDS + 1])
def test_one_second_past_either_edge_is_refused(skew: float) -> None:
    with pytest.raises(Rejected) as refused:
        Verifier([SECRET], clock=at(NOW + skew)).verify(BODY, headers())
    assert refused.value.status == 401
    assert "5-minute window" in refused.value.reason


def test_any_configured_secret_matches_while_rotating() -> None:
    verifier = Verifier([OTHER, SECRET], clock=at(NOW))
    assert verifier.verify(BODY, headers(secret=SECRET)) == "msg-1"
    assert verifier.verify(BODY, headers(secret=OTHER)) == "msg-1"


def test_a_sender_rotating_may_send_several_signatures() -> None:
    sent = headers(secret=OTHER)
    sent["webhook-signature"] += " " + headers()["webhook-signature"]
    assert Verifier([SECRET], clock=at(NOW)).verify(BODY, sent) == "msg-1"


def test_a_malformed_signature_is_refused_even_beside_a_good_one() -> None:
    """Stricter than the library, which stops reading at the first match: a header with a malformed
    part is a sender's bug, refused whatever else it holds."""
    sent = headers()
    sent["webhook-signature"] += " v1"
    with pytest.raises(Rejected) as refused:
        Verifier([SECRET], clock=at(NOW)).verify(BODY, sent)
    assert (refused.value.status, refused.value.reason) == (401, "malformed webhook-signature header")


def test_a_missing_header_is_named() -> None:
    sent = headers()
    del sent["webhook-timestamp"]
    with pytest.raises(Rejected) as refused:
        Verifier([SECRET], clock=at(NOW)).verify(BODY, sent)
    assert (refused.value.status, refused.value.reason) == (
        401,
        "missing signature header(s): webhook-timestamp",
    )


def test_a_body_that_is_not_utf8_is_a_400() -> None:
    with pytest.raises(Rejected) as refused:
        Verifier([SECRET], clock=at(NOW)).verify(b"\xff" + BODY, headers())
    assert refused.value.status == 400


def cases(now: float) -> list[tuple[str, bytes, dict[str, str]]]:
    """Good and bad requests signed at ``now``, each the way a sender or an attacker would send it."""
    good = headers(at=now)
    signature = good["webhook-signature"]
    return [
        ("good", BODY, good),
        ("tampered body", BODY.replace(b"evt-1", b"evt-2"), good),
        ("other id", BODY, good | {"webhook-id": "msg-2"}),
        ("other secret", BODY, headers(at=now, secret=OTHER)),
        ("timestamp moved", BODY, good | {"webhook-timestamp": str(int(now) + 1)}),
        ("fractional timestamp", BODY, good | {"webhook-timestamp": f"{int(now)}.4"}),
        ("ten minutes old", BODY, headers(at=now - 600)),
        ("unknown version only", BODY, good | {"webhook-signature": signature.replace("v1,", "v2,")}),
        ("unknown version, then v1", BODY, good | {"webhook-signature": "v2,abc " + signature}),
        ("no comma", BODY, good | {"webhook-signature": "v1"}),
        ("bad padding", BODY, good | {"webhook-signature": "v1,abc"}),
        ("timestamp not a number", BODY, good | {"webhook-timestamp": "soon"}),
        ("timestamp not finite", BODY, good | {"webhook-timestamp": "nan"}),
        ("signature is the secret", BODY, good | {"webhook-signature": SECRET}),
        ("non-ASCII id", BODY, headers(at=now, msg_id="m\u00dfg")),
    ]  # fmt: skip


CASES = [name for name, _, _ in cases(NOW)]


@pytest.mark.parametrize("name", CASES)
def test_the_check_agrees_with_the_library(name: str) -> None:
    """Both accept or both refuse (the library reads the real clock, so the cases are signed now)."""
    body, sent = next((b, h) for n, b, h in cases(time.time()) if n == name)
    try:
        Webhook(SECRET).verify(body.decode(), sent, json_parse=False)
        library_accepts = True
    except (WebhookVerificationError, ValueError):
        library_accepts = False
    try:
        Verifier([SECRET]).verify(body, sent)
        ours_accepts = True
    except Rejected:
        ours_accepts = False
    assert ours_accepts == library_accepts
