from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from iterable_recipes.clients.errors import PermanentError, RetryableError, SplitBatchError
from iterable_recipes.clients.iterable import (
    DEFAULT_RATE_MARGIN_SECONDS,
    ITERABLE_RATE_LIMITS,
    LIST_WRITE_ENDPOINTS,
    IterableClient,
    iterable_limiter,
    paced_rates,
)
from iterable_recipes.clients.iterable_models import (
    BulkUser,
    FailureCategory,
    TrackEventRequest,
    UpdateSubscriptionsRequest,
)
from iterable_recipes.clients.limiter import InMemoryLimiter, Rate
from iterable_recipes.clients.retry import RetryPolicy
from iterable_recipes.masking import mask_emails
from tests.iterable_recipes.clients.fakes import Script, error, ok

EMAIL = "ada@example.com"


class RecordingLimiter:
    def __init__(self) -> None:
        self.acquired: list[str] = []
        self.slowed: list[tuple[str, float | None]] = []

    def acquire(self, name: str) -> None:
        self.acquired.append(name)

    def slow_down(self, name: str, retry_after: float | None = None) -> None:
        self.slowed.append((name, retry_after))


# ---- base URL, headers, keep-alive ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "host"),
    [
        ({}, "api.iterable.com"),
        ({"region": "eu"}, "api.eu.iterable.com"),
        ({"region": "eu", "base_url": "http://127.0.0.1:9/"}, "127.0.0.1"),
    ],
)
def test_region_and_base_url(kwargs: dict[str, str], host: str) -> None:
    script = Script(ok({"channels": []}))
    with script.client(**kwargs) as client:
        client.get_channels()
    assert script.requests[0].url.host == host
    assert script.requests[0].url.path == "/api/channels"


def test_unknown_region_is_refused() -> None:
    with pytest.raises(ValueError):
        IterableClient("k", region="mars")  # type: ignore[arg-type]


def test_headers_and_body() -> None:
    script = Script(ok({"successCount": 1, "failCount": 0}))
    with script.client() as client:
        client.bulk_update_users([{"email": EMAIL, "dataFields": {"a": 1}}], create_new_fields=False)
    request = script.requests[0]
    assert request.headers["Api-Key"] == "test-key"
    assert request.headers["Content-Type"] == "application/json"
    assert script.bodies() == [
        {"users": [{"email": EMAIL, "dataFields": {"a": 1}}], "createNewFields": False}
    ]


def test_repr_hides_the_key() -> None:
    client = IterableClient("secret-key-123")
    assert "secret-key-123" not in repr(client)
    client.close()


def test_limiter_is_acquired_per_endpoint_name() -> None:
    limiter = RecordingLimiter()
    script = Script(ok({"user": {"email": EMAIL}}), ok({"successCount": 1, "failCount": 0}))
    with script.client(limiter=limiter) as client:
        client.get_user_by_email(EMAIL)
        client.track_events([{"eventName": "x", "email": EMAIL}])
    assert limiter.acquired == ["users/getByEmail", "events/trackBulk"]


def test_rate_limits_follow_the_spec() -> None:
    assert ITERABLE_RATE_LIMITS["users/bulkUpdate"] == Rate(5)
    assert ITERABLE_RATE_LIMITS["events/trackBulk"] == Rate(10)
    assert ITERABLE_RATE_LIMITS["users/getByEmail"] == Rate(100)
    assert ITERABLE_RATE_LIMITS["users/byUserId"] == Rate(100)
    assert ITERABLE_RATE_LIMITS["export/data.json"] == Rate(4, 60.0)  # "4 requests/minute"
    # No client method sends these single-item endpoints any more, so nothing paces them.
    assert "events/track" not in ITERABLE_RATE_LIMITS
    assert "users/update" not in ITERABLE_RATE_LIMITS
    assert isinstance(iterable_limiter(), InMemoryLimiter)


# ---- error classification ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        error(429),
        error(429, "RateLimitExceeded", "slow down"),
        error(500, "GenericError"),
        error(502),
        error(503),
        error(408),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("dropped"),
    ],
    ids=["429-text", "429-json", "500", "502", "503", "408", "connect", "timeout", "dropped"],
)
def test_retryable_failures_are_retried_then_raised(answer: httpx.Response | Exception) -> None:
    script = Script(answer)
    policy = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.005)
    with script.client(retry=policy) as client, pytest.raises(RetryableError) as info:
        client.get_channels()
    assert len(script.requests) == 3
    assert info.value.endpoint == "channels"
    assert "http" not in str(info.value)


def test_retryable_failure_then_success() -> None:
    script = Script(error(503), httpx.ConnectError("x"), ok({"channels": []}))
    with script.client() as client:
        assert client.get_channels() == []
    assert len(script.requests) == 3


def test_429_plain_text_with_retry_after_slows_the_limiter() -> None:
    limiter = RecordingLimiter()
    script = Script(
        error(429, None, "Rate limit exceeded. Please try again later.", **{"Retry-After": "0.01"}),
        ok({"successCount": 1, "failCount": 0}),
    )
    with script.client(limiter=limiter) as client:
        client.track_events([{"eventName": "x", "userId": "u1"}])
    assert limiter.slowed == [("events/trackBulk", 0.01)]
    assert limiter.acquired == ["events/trackBulk", "events/trackBulk"]


def test_429_without_retry_after_leaves_the_back_off_to_the_limiter() -> None:
    limiter = RecordingLimiter()
    script = Script(error(429), ok({"successCount": 1, "failCount": 0}))
    with script.client(limiter=limiter) as client:
        client.track_events([{"eventName": "x", "userId": "u1"}])
    assert limiter.slowed == [("events/trackBulk", None)]


def test_a_429_told_to_the_limiter_is_held_by_it_not_by_the_retry_policy() -> None:
    once, limiter = RetryPolicy(attempts=1), RecordingLimiter()
    script = Script(error(429, **{"Retry-After": "2"}))
    with script.client(limiter=limiter, retry=once) as client, pytest.raises(RetryableError) as paced:
        client.get_channels()
    assert paced.value.held_by_limiter and paced.value.retry_after == 2.0
    with Script(error(429)).client(retry=once) as client, pytest.raises(RetryableError) as unpaced:
        client.get_channels()
    assert not unpaced.value.held_by_limiter  # NoLimiter: the retry policy waits as before


def test_retry_after_is_honoured_and_capped() -> None:
    waits: list[float] = []

    class SleepSpy(RetryPolicy):
        def delay(self, attempt: int, retry_after: float | None = None) -> float:
            waits.append(retry_after if retry_after is not None else -1)
            return 0.0

    script = Script(
        error(429, **{"Retry-After": "3"}),
        error(503, **{"Retry-After": "5"}),
        error(503),
        ok({"channels": []}),
    )
    with script.client(retry=SleepSpy(attempts=5)) as client:
        client.get_channels()
    assert waits == [3.0, 5.0, -1]
    assert RetryPolicy(max_delay=2.0, jitter=0).delay(1, retry_after=3600) == 2.0


@pytest.mark.parametrize(
    "answer",
    [error(413, None, "Request Entity Too Large"), error(400, "BatchTooLarge", "too big")],
    ids=["413", "BatchTooLarge"],
)
def test_too_large_splits(answer: httpx.Response) -> None:
    script = Script(answer)
    with script.client() as client, pytest.raises(SplitBatchError):
        client.bulk_update_users([{"email": EMAIL}])
    assert len(script.requests) == 1


def test_field_type_mismatch_splits_bulk_but_is_permanent_for_a_read() -> None:
    mismatch = httpx.Response(
        400,
        json={
            "msg": f"Field types mismatched for {EMAIL}",
            "code": "RequestFieldsTypesMismatched",
            "params": {"validationErrors": {"plan": {"expectedType": "string", "offendingValue": EMAIL}}},
        },
    )
    script = Script(mismatch)
    with script.client() as client:
        with pytest.raises(SplitBatchError) as bulk:
            client.bulk_update_users([{"email": EMAIL, "dataFields": {"plan": 1}}])
        with pytest.raises(PermanentError) as single:
            client.get_user_by_email(EMAIL)
    assert not isinstance(single.value, SplitBatchError)
    for err in (bulk.value, single.value):
        assert err.code == "RequestFieldsTypesMismatched"
        assert "plan" in str(err)
        assert EMAIL not in str(err) and "example.com" not in str(err)
    assert len(script.requests) == 2


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "InvalidEmailAddressError"),
        (401, "BadApiKey"),
        (403, "Forbidden"),
        (404, None),
        (409, "ForgottenUserError"),
    ],
)
def test_other_4xx_are_permanent_with_code_and_message(status: int, code: str | None) -> None:
    script = Script(error(status, code, f"Invalid email: {EMAIL.replace('@', '%40')} and {EMAIL}"))
    with script.client() as client, pytest.raises(PermanentError) as info:
        client.bulk_update_users([{"email": EMAIL}])
    assert len(script.requests) == 1
    assert info.value.status == status
    assert info.value.code == code
    text = str(info.value)
    assert "ada@" not in text and "ada%40" not in text and "example.com" not in text
    assert "a***%40e***.com" in text and "a***@e***.com" in text


def test_error_messages_never_hold_the_url_or_key(caplog: pytest.LogCaptureFixture) -> None:
    script = Script(
        httpx.ConnectError(f"cannot reach https://api.iterable.com/api/users/getByEmail?email={EMAIL}")
    )
    caplog.set_level(logging.DEBUG)
    with (
        script.client(retry=RetryPolicy(attempts=2, base_delay=0)) as client,
        pytest.raises(RetryableError) as info,
    ):
        client.get_user_by_email(EMAIL)
    everything = str(info.value) + caplog.text
    assert "ada" not in everything and "%40" not in everything and "test-key" not in everything
    assert "iterable.com" not in everything


def test_mask_emails() -> None:
    assert mask_emails("x ada.l+1@example.co.uk y ada%40example.com") == "x a***@e***.uk y a***%40e***.com"


# ---- per-item outcomes ---------------------------------------------------------------------------


def test_bulk_update_fail_count_becomes_item_outcomes() -> None:
    users: list[BulkUser | dict[str, Any]] = [
        {"email": "ok@example.com"},
        {"email": "Bad@Example.com"},
        {"userId": "gone"},
        {"email": "both@example.com", "userId": "u4"},
        {"userId": "clash"},
        BulkUser(email="data@example.com", data_fields={"x": 1}),
    ]
    answer = {
        "successCount": 1,
        "failCount": 5,
        "failedUpdates": {
            "invalidEmails": ["bad@example.com"],
            "notFoundUserIds": ["gone"],
            "forgottenEmails": ["both@example.com"],
            "conflictUserIds": ["clash"],
            "invalidDataEmails": ["data@example.com"],
        },
        "filteredOutFields": ["secret"],
    }
    script = Script(ok(answer))
    with script.client() as client:
        result = client.bulk_update_users(users)
    assert result.accepted_indexes() == [0]
    categories = {i: f.category for i, f in result.failures.items()}
    assert categories == {
        1: FailureCategory.INVALID,
        2: FailureCategory.NOT_FOUND,
        3: FailureCategory.FORGOTTEN,
        4: FailureCategory.CONFLICT,
        5: FailureCategory.INVALID_DATA,
    }
    assert result.failures[2].identity == "gone"
    assert result.unattributed_failures == 0
    assert result.filtered_out_fields == ["secret"]
    assert result.retryable() == []
    assert script.bodies()[0]["users"][5] == {"email": "data@example.com", "dataFields": {"x": 1}}


def test_track_bulk_disallowed_and_not_found() -> None:
    events: list[TrackEventRequest | dict[str, Any]] = [
        TrackEventRequest(event_name="ok", email="a@example.com", id="e-1"),
        {"eventName": "blocked", "email": "b@example.com", "id": "e-2"},
        {"eventName": "ok", "userId": "nobody", "id": "e-3"},
    ]
    answer = {
        "successCount": 1,
        "failCount": 2,
        "disallowedEventNames": ["blocked"],
        "failedUpdates": {"notFoundUserIds": ["nobody"]},
    }
    # The same answer counting one failure more than it names: any event may be that one.
    script = Script(ok(answer), ok(answer | {"failCount": 3}))
    with script.client() as client:
        result = client.track_events(events)
        unpinned = client.track_events(events)
    assert result.failures[1].category is FailureCategory.DISALLOWED
    assert result.failures[2].category is FailureCategory.NOT_FOUND
    assert result.accepted_count == 1
    assert result.unattributed_failures == 0
    assert unpinned.unattributed_failures == 1
    assert unpinned.accepted_count == 0 and len(unpinned.retryable()) == 3
    assert script.bodies()[0]["events"][0] == {"eventName": "ok", "email": "a@example.com", "id": "e-1"}


def test_bulk_update_subscriptions_valid_failures_are_retryable() -> None:
    answer = {
        "successCount": 1,
        "failCount": 2,
        "invalidEmails": ["nope"],
        "invalidUserIds": [],
        "validEmailFailures": ["retry@example.com"],
        "validUserIdFailures": [],
    }
    script = Script(ok(answer))
    with script.client() as client:
        result = client.bulk_update_subscriptions(
            [
                {"email": "fine@example.com", "unsubscribedChannelIds": [1]},
                {"email": "nope", "unsubscribedChannelIds": [1]},
                {"email": "retry@example.com", "unsubscribedChannelIds": [1]},
            ]
        )
    assert result.failures[1].category is FailureCategory.INVALID
    assert [f.index for f in result.retryable()] == [2]
    assert [f.index for f in result.permanent()] == [1]


# ---- reads and subscriptions ---------------------------------------------------------------------


def test_get_user_by_email_none_for_empty_answer() -> None:
    script = Script(ok({}), ok({"user": {}}), ok({"user": {"email": EMAIL, "dataFields": {"a": 1}}}))
    with script.client() as client:
        assert client.get_user_by_email(EMAIL) is None
        # A user without an identity is not the documented {}: read as "cannot tell", not "nobody".
        with pytest.raises(RetryableError):
            client.get_user_by_email(EMAIL)
        user = client.get_user_by_email(EMAIL)
    assert user is not None and user.data_fields == {"a": 1}
    assert script.requests[0].url.path == "/api/users/getByEmail"
    assert script.requests[0].url.params["email"] == EMAIL


def test_get_user_by_user_id_none_for_unknown() -> None:
    script = Script(
        ok({}),
        error(400, "error.users.noUserWithIdExists", "no user"),
        ok({"user": {"email": EMAIL, "userId": "u1"}}),
        error(401, "BadApiKey"),
    )
    with script.client() as client:
        assert client.get_user_by_user_id("u1") is None
        assert client.get_user_by_user_id("u1") is None
        found = client.get_user_by_user_id("u1")
        assert found is not None and found.user_id == "u1"
        with pytest.raises(PermanentError):
            client.get_user_by_user_id("u1")
    assert script.requests[0].url.params["userId"] == "u1"


@pytest.mark.parametrize("status", [200, 202])
def test_unsubscribe_paths(status: int) -> None:
    script = Script(httpx.Response(status) if status == 202 else ok())
    with script.client() as client:
        first_answer = client.unsubscribe("messageType", 101, email="a+b@example.com")
        client.unsubscribe("messageChannel", 1, user_id="user/1")
    assert first_answer.code == ("Accepted" if status == 202 else "Success")
    first, second = script.requests
    assert (first.method, first.url.raw_path) == (
        "DELETE",
        b"/api/subscriptions/messageType/101/user/a%2Bb%40example.com",
    )
    assert (second.method, second.url.raw_path) == (
        "DELETE",
        b"/api/subscriptions/messageChannel/1/byUserId/user%2F1",
    )
    assert first.content == b""


@pytest.mark.parametrize("who", [{"email": "a@example.com", "user_id": "u"}, {}], ids=["both", "neither"])
def test_unsubscribe_needs_exactly_one_identity(who: dict[str, str]) -> None:
    script = Script(ok())
    with script.client() as client, pytest.raises(ValueError):
        client.unsubscribe("messageType", 1, **who)
    assert script.requests == []


@pytest.mark.parametrize("status", [200, 202])
def test_bulk_subscription(status: int) -> None:
    script = Script(ok(status=status) if status == 200 else httpx.Response(202))
    with script.client() as client:
        answer = client.bulk_subscription("messageChannel", 1, "unsubscribe", emails=[EMAIL], user_ids=["u1"])
    assert answer.code in {"Success", "Accepted"}
    request = script.requests[0]
    assert request.method == "PUT"
    assert request.url.path == "/api/subscriptions/messageChannel/1"
    assert request.url.params["action"] == "unsubscribe"
    assert script.bodies() == [{"users": [EMAIL], "usersByUserId": ["u1"]}]


def test_bulk_update_subscriptions_sends_only_given_arrays() -> None:
    script = Script(ok({"successCount": 2, "failCount": 0}))
    with script.client() as client:
        client.bulk_update_subscriptions(
            [
                {"email": EMAIL, "unsubscribedChannelIds": [1], "subscribedMessageTypeIds": []},
                UpdateSubscriptionsRequest(user_id="u1", unsubscribed_message_type_ids=[101]),
            ]
        )
    assert script.bodies() == [
        {
            "updateSubscriptionsRequests": [
                {"email": EMAIL, "unsubscribedChannelIds": [1], "subscribedMessageTypeIds": []},
                {"userId": "u1", "unsubscribedMessageTypeIds": [101]},
            ]
        }
    ]


def test_channels_and_message_types() -> None:
    script = Script(
        ok(
            {
                "channels": [
                    {"id": 1, "name": "Marketing", "channelType": "Marketing", "messageMedium": "Email"}
                ]
            }
        ),
        ok(
            {
                "messageTypes": [
                    {
                        "id": 101,
                        "name": "GitLab Marketing",
                        "channelId": 1,
                        "subscriptionPolicy": "OptIn",
                        "createdAt": 1,
                        "updatedAt": 2,
                        "frequencyCap": {"days": 1, "messages": 2},
                    }
                ]
            }
        ),
    )
    with script.client() as client:
        channels = client.get_channels()
        types = client.get_message_types()
    assert channels[0].channel_type == "Marketing"
    assert types[0].subscription_policy == "OptIn"
    assert types[0].frequency_cap is not None and types[0].frequency_cap.messages == 2


def test_unexpected_answer_shape_is_a_permanent_api_error() -> None:
    script = Script(ok({"channels": [{"id": "not-a-number"}]}))
    with script.client() as client, pytest.raises(PermanentError) as info:
        client.get_channels()
    assert info.value.code == "UnexpectedResponse"
    assert "channels.0" in str(info.value)


def test_unreadable_success_body_is_retryable() -> None:
    script = Script(httpx.Response(200, text="<html>proxy</html>"))
    with script.client(retry=RetryPolicy(attempts=1)) as client, pytest.raises(RetryableError):
        client.get_channels()


def test_paced_rates_keep_a_share_of_each_limit_and_widen_its_window_by_the_margin() -> None:
    rates = paced_rates(0.5, margin_seconds=0.005)
    assert set(rates) == set(ITERABLE_RATE_LIMITS) | set(LIST_WRITE_ENDPOINTS)
    assert rates["users/bulkUpdate"] == Rate(5, 2.005)
    assert rates["export/data.json"] == Rate(4, 120.005)
    # The default: every limit whole, its window DEFAULT_RATE_MARGIN_SECONDS wider.
    assert paced_rates()["users/bulkUpdate"] == Rate(5, 1 + DEFAULT_RATE_MARGIN_SECONDS)
    with pytest.raises(ValueError, match="share"):
        paced_rates(1.5)
