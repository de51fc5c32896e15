"""Replays hand-written Iterable cassettes (see cassettes/README.md) through the real client."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from iterable_recipes.clients.batching import send_splitting
from iterable_recipes.clients.errors import PermanentError
from iterable_recipes.clients.iterable import IterableClient
from iterable_recipes.clients.iterable_models import FailureCategory
from tests.iterable_recipes.clients.fakes import FAST_RETRY

CASSETTES = Path(__file__).resolve().parent / "cassettes"
RECORD_KEY = os.environ.get("ITERABLE_RECORD_API_KEY")


@pytest.fixture(scope="module")
def vcr_cassette_dir() -> str:
    return str(CASSETTES)


@pytest.fixture
def vcr_config() -> dict[str, Any]:
    return {
        "filter_headers": ["Api-Key", "Api_Key", "Authorization"],
        "match_on": ["method", "scheme", "host", "port", "path", "query", "json_body"],
        "allow_playback_repeats": False,
    }


@pytest.fixture
def client() -> Any:
    with IterableClient(RECORD_KEY or "cassette-key", retry=FAST_RETRY) as c:
        yield c


def done(vcr: Any) -> None:
    assert vcr.all_played, "the cassette holds interactions the client did not make"


@pytest.mark.vcr
@pytest.mark.default_cassette("events_trackBulk")
def test_events_track_bulk(client: IterableClient, vcr: Any) -> None:
    result = client.track_events(
        [
            {
                "email": "ada@example.com",
                "eventName": "saasTrialStarted",
                "id": "customersdot-evt-1001",
                "dataFields": {"plan": "ultimate"},
            },
            {"email": "nobody@example.com", "eventName": "saasTrialStarted", "id": "customersdot-evt-1002"},
            {"userId": "u-3", "eventName": "blockedEvent", "id": "customersdot-evt-1003"},
        ]
    )
    assert result.accepted_indexes() == [0]
    assert result.failures[1].category is FailureCategory.NOT_FOUND
    assert result.failures[2].category is FailureCategory.DISALLOWED
    assert result.created_fields == ["plan"]
    done(vcr)


@pytest.mark.vcr
@pytest.mark.default_cassette("users_bulkUpdate")
def test_users_bulk_update(client: IterableClient, vcr: Any) -> None:
    result = client.bulk_update_users(
        [
            {"userId": "u-1", "dataFields": {"plan": "free"}, "preferUserId": False},
            {"userId": "u-unknown", "dataFields": {"plan": "free"}, "preferUserId": False},
            {"email": "not-an-email", "dataFields": {"plan": "free"}},
            {"email": "clash@example.com", "userId": "u-9", "dataFields": {"plan": "premium"}},
        ],
        create_new_fields=False,
    )
    assert result.accepted_indexes() == [0]
    assert {i: f.category.value for i, f in result.failures.items()} == {
        1: "not_found",
        2: "invalid",
        3: "conflict",
    }
    done(vcr)


@pytest.mark.vcr
@pytest.mark.default_cassette("users_bulkUpdateSubscriptions")
def test_users_bulk_update_subscriptions(client: IterableClient, vcr: Any) -> None:
    result = client.bulk_update_subscriptions(
        [
            {"email": "ada@example.com", "unsubscribedChannelIds": [1]},
            {"email": "bad-address", "unsubscribedChannelIds": [1]},
            {"userId": "u-2", "unsubscribedChannelIds": [1]},
        ]
    )
    assert result.failures[1].category is FailureCategory.INVALID
    assert [f.index for f in result.retryable()] == [2]
    done(vcr)


@pytest.mark.vcr
@pytest.mark.default_cassette("users_getByEmail")
def test_users_get_by_email(client: IterableClient, vcr: Any) -> None:
    user = client.get_user_by_email("ada@example.com")
    assert user is not None and user.user_id == "u-1"
    assert user.data_fields["subscribedMessageTypeIds"] == [101]
    assert client.get_user_by_email("nobody@example.com") is None
    done(vcr)


@pytest.mark.vcr
@pytest.mark.default_cassette("users_byUserId")
def test_users_by_user_id(client: IterableClient, vcr: Any) -> None:
    user = client.get_user_by_user_id("u-1")
    assert user is not None and user.email == "ada@example.com"
    assert client.get_user_by_user_id("u-unknown") is None
    assert client.get_user_by_user_id("u-gone") is None
    done(vcr)


@pytest.mark.vcr
@pytest.mark.default_cassette("subscriptions_single")
def test_subscriptions_single_unsubscribe(client: IterableClient, vcr: Any) -> None:
    assert client.unsubscribe("messageType", 101, email="ada@example.com").code == "Success"
    assert client.unsubscribe("messageChannel", 1, user_id="u-1").code == "Accepted"
    done(vcr)


@pytest.mark.vcr
@pytest.mark.default_cassette("subscriptions_bulk")
def test_subscriptions_bulk(client: IterableClient, vcr: Any) -> None:
    answer = client.bulk_subscription(
        "messageChannel", 1, "unsubscribe", emails=["ada@example.com", "grace@example.com"], user_ids=["u-3"]
    )
    assert answer.code == "Accepted"
    done(vcr)


@pytest.mark.vcr
@pytest.mark.default_cassette("channels_eu")
def test_channels_eu(vcr: Any) -> None:
    with IterableClient(RECORD_KEY or "cassette-key", region="eu", retry=FAST_RETRY) as eu:
        channels = eu.get_channels()
    assert [(c.id, c.channel_type) for c in channels] == [(1, "Marketing"), (2, "Transactional")]
    done(vcr)


@pytest.mark.vcr
@pytest.mark.default_cassette("messageTypes")
def test_message_types(client: IterableClient, vcr: Any) -> None:
    types = client.get_message_types()
    assert [(t.name, t.subscription_policy) for t in types] == [
        ("GitLab Marketing", "OptIn"),
        ("Marketing Message", "OptOut"),
    ]
    assert types[1].frequency_cap is not None and types[1].frequency_cap.days == 7
    done(vcr)


@pytest.mark.vcr
@pytest.mark.default_cassette("errors_rate_limited_then_ok")
def test_plain_text_429_is_retried(client: IterableClient, vcr: Any) -> None:
    result = client.bulk_update_users([{"userId": "u-1", "dataFields": {"plan": "free"}}])
    assert result.accepted_count == 1
    assert vcr.play_count == 2
    done(vcr)


@pytest.mark.vcr
@pytest.mark.default_cassette("errors_field_types_mismatched")
def test_field_type_mismatch_isolates_the_record(client: IterableClient, vcr: Any) -> None:
    users = [
        {"userId": "u-1", "dataFields": {"seats": 5}},
        {"userId": "u-2", "dataFields": {"seats": "five"}},
    ]
    result = send_splitting(users, client.bulk_update_users)
    assert result.accepted_indexes() == [0]
    assert result.failures[1].category is FailureCategory.INVALID_DATA
    assert "seats" in result.failures[1].reason and "five" not in result.failures[1].reason
    done(vcr)


@pytest.mark.vcr
@pytest.mark.default_cassette("errors_bad_api_key")
def test_bad_api_key_is_permanent(client: IterableClient, vcr: Any) -> None:
    with pytest.raises(PermanentError) as info:
        client.get_channels()
    assert info.value.code == "BadApiKey"
    assert vcr.play_count == 1


@pytest.mark.live_iterable
@pytest.mark.vcr(record_mode="all")
@pytest.mark.default_cassette("recorded/live_read_only")
@pytest.mark.skipif(
    not RECORD_KEY,
    reason="needs ITERABLE_RECORD_API_KEY (a real Iterable project); see the cassettes README",
)
def test_live_read_only_calls_parse(vcr: Any) -> None:
    # Read-only calls only: safe against any project, and they prove our response models parse real answers.
    region = os.environ.get("ITERABLE_RECORD_REGION", "us")
    with IterableClient(RECORD_KEY or "", region=region, retry=FAST_RETRY) as live:  # type: ignore[arg-type]
        assert isinstance(live.get_channels(), list)
        assert isinstance(live.get_message_types(), list)
        assert live.get_user_by_email("nobody-cassette-check@example.invalid") is None
    assert vcr.play_count == 0 and len(vcr) == 3
