"""The CustomersDot body is stored as signed, and reads back (drain and SQL) as the contract read it."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import text

from iterable_recipes.cli.inbox import PERSON_EMAIL_PATHS
from iterable_recipes.customersdot.contract import customersdot_event_adapter, parse_customersdot_event
from iterable_recipes.receiver.raw_body import fields_given, key_count, storable_as_sent
from tests.iterable_recipes.receiver.conftest import Receiver, sign, trial

PATH = "/webhooks/customersdot"


def post(receiver: Receiver, body: str, msg_id: str) -> httpx.Response:
    return httpx.post(receiver.url + PATH, content=body, headers=sign(body, msg_id), timeout=10)


def stored_text(receiver: Receiver, item_id: int) -> str:
    with receiver.inbox.engine.connect() as conn:
        value = conn.execute(
            text("SELECT CAST(payload AS TEXT) FROM received_events WHERE id = :id"), {"id": item_id}
        ).scalar_one()
    return str(value)


def test_the_signed_bytes_are_stored_as_sent_and_the_drain_reads_the_same_event(receiver: Receiver) -> None:
    # Spacing, key order, an integer user id and left-out optional fields: all kept as sent.
    body = (
        '{ "type": "saas_trial_started", "version": "1", "id": "evt-raw",\n'
        '  "occurred_at": "2024-06-11T12:00:00+02:00",\n'
        '  "person": {"user_id": 42, "email": "raw@example.com"}, "data": {"company": "A\\"C: ME"} }'
    )
    answer = post(receiver, body, "msg-raw")
    assert answer.status_code == 202
    item = receiver.inbox.get(answer.json()["id"])
    assert item is not None and item.payload == json.loads(body)
    if receiver.inbox.is_sqlite:
        assert stored_text(receiver, item.id) == body  # not re-encoded
    # What the drain validates from the stored payload is the event the receiver validated.
    assert customersdot_event_adapter.validate_python(item.payload) == parse_customersdot_event(body)


def test_a_repeated_key_is_stored_in_the_contracts_form_so_sql_reads_what_the_drain_sends(
    receiver: Receiver,
) -> None:
    # The contract (and json.loads) take the last "email"; SQLite's json_extract would take the first.
    body = trial(event_id="evt-twice")
    sent = json.dumps(body).replace(
        '"email": "person@example.com"', '"email": "first@example.com", "email": "last@example.com"'
    )
    assert sent.count('"email"') == 2
    answer = post(receiver, sent, "msg-twice")
    assert answer.status_code == 202
    item = receiver.inbox.get(answer.json()["id"])
    assert item is not None and item.payload is not None
    assert item.payload["person"]["email"] == "last@example.com"
    assert "first@example.com" not in stored_text(receiver, item.id)
    found = receiver.inbox.find_by_payload(PERSON_EMAIL_PATHS, lambda held: held == "last@example.com")
    assert [i.id for i in found] == [item.id]


@pytest.mark.parametrize(
    ("body", "keys"),
    [
        (b"{}", 0),
        (b'{"a": 1, "b": {"c": [1, {"d": null}]}}', 4),
        (b'{"a": "x:y", "b\\":": "\\\\:"}', 2),  # colons and escaped quotes inside strings
        (b'{"a": 1, "a": 2}', 2),
        # Compact bodies (no escape, no space after a quote) are counted the quick way.
        (b'{"a":1,"a":2}', 2),
        (b'{"a":"x:y","b":{"c":[1,{"d":null}]}}', 4),
        (b'{"a":"x","b" :1}', 2),  # a space before a colon: the full count
    ],
)
def test_key_count_counts_every_key_and_no_colon_inside_a_string(body: bytes, keys: int) -> None:
    assert key_count(body) == keys


def test_a_body_is_storable_as_sent_only_when_each_key_is_a_field_read_once() -> None:
    once = json.dumps(trial()).encode()
    event = parse_customersdot_event(once)
    assert fields_given(event) == key_count(once) == 10
    assert storable_as_sent(once, event)
    twice = once.replace(b'"version": "1"', b'"version": "1", "version": "1"')
    assert not storable_as_sent(twice, parse_customersdot_event(twice))
