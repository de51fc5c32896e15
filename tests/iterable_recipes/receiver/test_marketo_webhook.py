"""Marketo's "Call Webhook" body as Marketo sends it: an address typed with padding is one person.

Marketo does not retry a refused call, so a 422 for " x@example.com" would lose the unsubscribe.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dev.standins.serving import serving
from iterable_recipes.receiver import Nudger, create_app
from iterable_recipes.store import Inbox
from tests.iterable_recipes.receiver.conftest import RecordingTrigger, make_url, settings_for

PATH = "/webhooks/marketo/unsubscribe"
SECRET = "marketo-shared-secret-for-tests-1"


@pytest.fixture(params=["sqlite", "postgres"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Inbox, str]]:
    """(base URL, inbox, secret header name) of a receiver that accepts Marketo's shared secret."""
    url = make_url(request.param, request, tmp_path)
    settings = settings_for(url, marketo_webhook_secret=[SECRET])
    inbox = Inbox(url)
    nudger = Nudger(RecordingTrigger(), settings.nudge_window_seconds).start()
    with serving(create_app(settings, nudger, inbox=inbox)) as base:
        yield base, inbox, settings.marketo_webhook_header
    nudger.stop()
    inbox.dispose()


def post(served: tuple[str, Inbox, str], email: str, lead: str) -> httpx.Response:
    base, _, header = served
    body = json.dumps({"email": email, "leadId": lead, "unsubscribedAt": "2026-12-01T10:00:00Z"})
    return httpx.post(base + PATH, content=body, headers={header: SECRET}, timeout=10)


@pytest.mark.parametrize("padded", [" X@Example.com", "x@example.com\t", "\u00a0x@EXAMPLE.com\u00a0"])
def test_a_padded_address_is_accepted_and_stored_normalised(
    served: tuple[str, Inbox, str], padded: str
) -> None:
    answer = post(served, padded, "101")
    assert answer.status_code == 202, answer.text
    item = served[1].get(answer.json()["id"])
    assert item is not None and item.payload is not None
    assert item.payload["email"] == "x@example.com"


def test_the_published_pattern_admits_padding_and_refuses_inner_spaces(
    served: tuple[str, Inbox, str],
) -> None:
    schema = httpx.get(served[0] + "/openapi.json").json()
    components = schema["components"]["schemas"]
    pattern = next(s for n, s in components.items() if n.startswith("MarketoUnsubscribe"))["properties"][
        "email"
    ]["pattern"]
    assert re.fullmatch(pattern, " x@example.com\u00a0")
    assert not re.fullmatch(pattern, "x y@example.com")
    assert post(served, "x y@example.com", "102").status_code == 422
