"""Bad input at the edges gets a clear 4xx naming the limit, never a 5xx loop; the database schema, the
receiver and its published OpenAPI document agree on every length."""

from __future__ import annotations

import re

import httpx
import pytest

from iterable_recipes.identities import TRIM_CHARS
from iterable_recipes.receiver.limits import column_length
from tests.iterable_recipes.receiver.conftest import Receiver, dumps, sign, trial

PATH = "/webhooks/customersdot"
MARKETO = "/webhooks/marketo/unsubscribe"
# What `\s` means to an ECMA-262 engine (the JSON Schema pattern dialect), which is not Python's `\s`.
ECMA_WHITESPACE = r"\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"


def customersdot_parameters(receiver: Receiver) -> dict[str, dict[str, object]]:
    document = httpx.get(receiver.url + "/openapi.json").json()
    operation = document["paths"][PATH]["post"]
    return {p["name"]: p["schema"] for p in operation["parameters"] if p["in"] == "header"}


def test_an_over_long_webhook_id_is_refused_with_the_limit_named(receiver: Receiver) -> None:
    limit = customersdot_parameters(receiver)["webhook-id"]["maxLength"]
    assert isinstance(limit, int)
    body = dumps(trial())
    answer = httpx.post(receiver.url + PATH, content=body, headers=sign(body, "m" * (limit + 1)))
    assert answer.status_code == 400, answer.text
    assert f"webhook-id is longer than {limit} characters" in answer.json()["error"]
    assert receiver.stored() == 0


def test_the_longest_webhook_id_the_receiver_publishes_is_stored(receiver: Receiver) -> None:
    limit = customersdot_parameters(receiver)["webhook-id"]["maxLength"]
    assert isinstance(limit, int)
    body = dumps(trial())
    answer = httpx.post(receiver.url + PATH, content=body, headers=sign(body, "m" * limit))
    assert answer.status_code == 202, answer.text
    stored = receiver.inbox.get(answer.json()["id"])
    assert stored is not None and stored.webhook_id is not None
    assert len(stored.webhook_id) <= column_length("webhook_id")


@pytest.mark.parametrize("header", ["webhook-timestamp", "webhook-signature"])
def test_over_long_signature_headers_are_refused_with_the_limit_named(
    receiver: Receiver, header: str
) -> None:
    limit = customersdot_parameters(receiver)[header]["maxLength"]
    assert isinstance(limit, int)
    body = dumps(trial())
    headers = sign(body, "msg-1") | {header: "1" * (limit + 1)}
    answer = httpx.post(receiver.url + PATH, content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert f"{header} is longer than {limit} characters" in answer.json()["error"]


def test_an_over_long_marketo_secret_header_is_refused_with_the_limit_named(receiver: Receiver) -> None:
    document = httpx.get(receiver.url + "/openapi.json").json()
    (header,) = document["paths"][MARKETO]["post"]["parameters"]
    name, limit = header["name"], header["schema"]["maxLength"]
    answer = httpx.post(receiver.url + MARKETO, content=b"{}", headers={name: "s" * (limit + 1)})
    assert answer.status_code == 400, answer.text
    assert f"{name} is longer than {limit} characters" in answer.json()["error"]


def test_a_405_names_the_allowed_methods(receiver: Receiver) -> None:
    for path, allowed in ((PATH, "POST"), (MARKETO, "POST"), ("/healthz", "GET")):
        answer = httpx.request("TRACE", receiver.url + path)
        assert answer.status_code == 405
        assert allowed in answer.headers.get("allow", ""), (path, answer.headers)


def test_the_published_email_pattern_refuses_what_the_server_refuses(receiver: Receiver) -> None:
    document = httpx.get(receiver.url + "/openapi.json").json()
    published = document["components"]["schemas"]["Person"]["properties"]["email"]["pattern"]
    # Read the published pattern the way an ECMA-262 engine (a client's validator, schemathesis) does.
    as_clients_read_it = re.compile(published.replace(r"\s", ECMA_WHITESPACE))
    for char in TRIM_CHARS:
        inside = f"ab{char}c@example.com"
        assert as_clients_read_it.fullmatch(inside) is None, f"U+{ord(char):04X} is admitted"


def test_a_webhook_id_longer_than_the_column_gets_a_4xx_never_a_503(receiver: Receiver) -> None:
    body = dumps(trial())
    too_long = "m" * column_length("webhook_id")
    answer = httpx.post(receiver.url + PATH, content=body, headers=sign(body, too_long))
    assert 400 <= answer.status_code < 500, answer.text
    assert receiver.stored() == 0
