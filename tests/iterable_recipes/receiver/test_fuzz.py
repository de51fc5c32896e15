from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dev.standins.serving import serving
from iterable_recipes.receiver import Nudger, create_app
from iterable_recipes.store import Inbox, migrate
from tests.iterable_recipes.receiver.conftest import RecordingTrigger, dumps, settings_for, sign, trial

PATH = "/webhooks/customersdot"
FUZZ = settings(max_examples=700, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
header_names = st.sampled_from(
    ["webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "x-any"]
)
header_values = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40)


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Inbox]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / Path('recipes.db')}"
    migrate(url)
    inbox = Inbox(url)
    nudger = Nudger(RecordingTrigger(), 0.2).start()
    with (
        serving(create_app(settings_for(url), nudger, inbox=inbox)) as base,
        httpx.Client(base_url=base) as client,
    ):
        yield client, inbox
    nudger.stop()
    inbox.dispose()


def stored(inbox: Inbox) -> int:
    return sum(sum(s.values()) for s in inbox.counts().values())


@FUZZ
@given(body=st.binary(max_size=600), headers=st.dictionaries(header_names, header_values, max_size=4))
def test_unsigned_garbage_is_refused_and_nothing_is_stored(
    fuzz_target: tuple[httpx.Client, Inbox], body: bytes, headers: dict[str, str]
) -> None:
    client, inbox = fuzz_target
    before = stored(inbox)
    answer = client.post(PATH, content=body, headers=headers)
    assert 400 <= answer.status_code < 500, answer.text
    assert "error" in answer.json()
    assert stored(inbox) == before


@FUZZ
@given(
    path=st.lists(
        st.sampled_from(
            [
                "version",
                "id",
                "type",
                "occurred_at",
                "person",
                "email",
                "data",
                "company",
                "latest_trial_start_date",
                "registration_kind",
                "user_id",
            ]
        ),
        min_size=1,
        max_size=3,
    ),
    value=json_values,
    skew=st.sampled_from([0, 0, 0, 400, -400]),
)
def test_signed_mutations_of_a_valid_event_never_500_and_refusals_store_nothing(
    fuzz_target: tuple[httpx.Client, Inbox], path: list[str], value: object, skew: int
) -> None:
    client, inbox = fuzz_target
    event = trial(event_id=f"evt-{uuid.uuid4().hex}", email="fuzz@example.com")
    node: object = event
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node[path[-1]] = value
    body = dumps(event)
    before = stored(inbox)
    answer = client.post(
        PATH,
        content=body,
        headers=sign(body, uuid.uuid4().hex, at=datetime.now(UTC) + timedelta(seconds=skew)),
    )
    assert answer.status_code in {200, 202, 400, 401, 413, 422}, answer.text
    if answer.status_code == 202:
        assert stored(inbox) == before + 1
    else:
        assert stored(inbox) == before
        assert "fuzz@example.com" not in answer.text


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(repeats=st.integers(min_value=2, max_value=4), same_webhook_id=st.booleans())
def test_a_repeated_signed_request_is_stored_once(
    fuzz_target: tuple[httpx.Client, Inbox], repeats: int, same_webhook_id: bool
) -> None:
    client, inbox = fuzz_target
    body = dumps(trial(event_id=f"evt-{uuid.uuid4().hex}"))
    before = stored(inbox)
    shared_id = uuid.uuid4().hex
    answers = [
        client.post(
            PATH, content=body, headers=sign(body, shared_id if same_webhook_id else uuid.uuid4().hex)
        )
        for _ in range(repeats)
    ]
    assert [a.status_code for a in answers] == [202] + [200] * (repeats - 1)
    assert len({a.json()["id"] for a in answers}) == 1
    assert stored(inbox) - before == 1
