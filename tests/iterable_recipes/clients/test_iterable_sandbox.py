"""The client against the Iterable stand-in over real sockets: retries, limits, splitting, item outcomes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dev.standins.iterable.app import create_app
from dev.standins.iterable.options import SandboxOptions
from dev.standins.serving import serving
from iterable_recipes.clients.batching import batches, send_splitting
from iterable_recipes.clients.errors import PermanentError, RetryableError
from iterable_recipes.clients.iterable import IterableClient, iterable_limiter
from iterable_recipes.clients.iterable_models import FailureCategory, event_id_from
from iterable_recipes.clients.retry import RetryPolicy
from tests.contract.iterable_spec import SpecCheckingTransport
from tests.iterable_recipes.clients.fakes import FAST_RETRY

KEY = "sandbox-key"


class RecordingLimiter:
    def __init__(self) -> None:
        self.slowed: list[tuple[str, float | None]] = []

    def acquire(self, name: str) -> None:
        pass

    def slow_down(self, name: str, retry_after: float | None = None) -> None:
        self.slowed.append((name, retry_after))


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serving(create_app(SandboxOptions())) as url:
        yield url


@pytest.fixture
def control(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{base_url}/_sandbox", timeout=10) as c:
        c.post("/reset").raise_for_status()
        c.delete("/faults").raise_for_status()
        yield c
        c.delete("/faults")


def faults(control: httpx.Client, **spec: Any) -> None:
    control.post("/faults", json=spec).raise_for_status()


def requests_seen(control: httpx.Client, endpoint: str) -> dict[str, int]:
    stats: dict[str, Any] = control.get("/stats").json()
    return dict(stats["requests"].get(endpoint, {}))


@pytest.fixture
def client(base_url: str) -> Iterator[IterableClient]:
    transport = SpecCheckingTransport(httpx.HTTPTransport())
    with IterableClient(KEY, base_url=base_url, transport=transport, retry=FAST_RETRY) as c:
        yield c
    assert transport.violations == []


def users(n: int, start: int = 0, **fields: Any) -> list[dict[str, Any]]:
    return [
        {"email": f"user{i}@example.com", "dataFields": {"n": i, **fields}} for i in range(start, start + n)
    ]


def test_bulk_update_writes_profiles(client: IterableClient, control: httpx.Client) -> None:
    result = client.bulk_update_users(users(3, plan="free"), create_new_fields=True)
    assert result.accepted_count == 3
    stored = {u["email"]: u for u in control.get("/users").json()}
    assert stored["user1@example.com"]["dataFields"]["plan"] == "free"


def test_per_item_failures(client: IterableClient, control: httpx.Client) -> None:
    batch: list[dict[str, Any]] = [
        {"email": "ok@example.com", "dataFields": {"a": 1}},
        {"email": "not-an-email", "dataFields": {"a": 1}},
        {"userId": "nobody", "dataFields": {"a": 1}, "preferUserId": False},
    ]
    result = client.bulk_update_users(batch)
    assert result.accepted_indexes() == [0]
    assert result.failures[1].category is FailureCategory.INVALID
    assert result.failures[2].category is FailureCategory.NOT_FOUND
    assert result.unattributed_failures == 0
    assert control.get("/stats").json()["users"] == 1


def test_get_user_by_email_and_user_id(client: IterableClient, control: httpx.Client) -> None:
    control.post("/users", json=[{"email": "seed@example.com", "userId": "s-1", "dataFields": {"x": 1}}])
    found = client.get_user_by_email("seed@example.com")
    assert found is not None and found.data_fields.get("x") == 1
    assert client.get_user_by_email("unknown@example.com") is None
    assert client.get_user_by_user_id("s-1") is not None
    assert client.get_user_by_user_id("nope") is None


@pytest.mark.parametrize(
    "answer",
    [
        {"body": {"code": "BadParams", "msg": "email is required"}},
        {"body": {"msg": "Something went wrong", "code": "GenericError", "params": None}},
        {"body": {"user": None}},
        {"body": {"user": {}}},
        {"body": []},
        {"body": ""},
        {"text": ""},
    ],
    ids=["bad-params", "generic-error", "user-null", "user-empty", "list", "string", "no-body"],
)
def test_get_by_email_reads_only_an_empty_object_as_not_found(
    client: IterableClient, control: httpx.Client, answer: dict[str, Any]
) -> None:
    control.post("/users", json=[{"email": "seed@example.com"}]).raise_for_status()
    faults(control, endpoint="users/getByEmail", fail_next=[answer])
    with pytest.raises(RetryableError) as info:
        client.get_user_by_email("seed@example.com")
    assert info.value.code == "UnexpectedResponse" and "@" not in str(info.value)
    # The next answer is Iterable's own again: the person is there, and {} still means unknown.
    assert client.get_user_by_email("seed@example.com") is not None
    assert client.get_user_by_email("nobody@example.com") is None


@pytest.mark.parametrize(
    ("endpoint", "answer"),
    [
        ("users/bulkUpdate", {"successCount": 1, "failCount": 1, "failedUpdates": {}}),
        (
            "users/bulkUpdate",
            {"successCount": 1, "failCount": 1, "failedUpdates": {"invalidEmails": ["x@example.org"]}},
        ),
        ("events/trackBulk", {"successCount": 1, "failCount": 1, "failedUpdates": {}}),
        ("events/trackBulk", {"successCount": 0, "failCount": 2, "invalidEmails": ["user0@example.com"]}),
    ],
    ids=["users-none-named", "users-stranger-named", "events-none-named", "events-one-of-two-named"],
)
def test_bulk_failures_no_item_can_take_leave_every_item_retryable(
    client: IterableClient, control: httpx.Client, endpoint: str, answer: dict[str, Any]
) -> None:
    faults(control, endpoint=endpoint, fail_next=[{"body": answer}])
    if endpoint == "users/bulkUpdate":
        result = client.bulk_update_users(users(2))
    else:
        result = client.track_events(
            [
                {"email": u["email"], "eventName": "signup", "id": event_id_from("t", str(i))}
                for i, u in enumerate(users(2))
            ]
        )
    assert result.accepted_indexes() == []
    assert [f.category for f in result.retryable()] == [FailureCategory.RETRY] * 2
    assert "@" not in str(result.failures[0].reason)


def test_server_errors_are_retried(client: IterableClient, control: httpx.Client) -> None:
    faults(control, endpoint="users/bulkUpdate", fail_next=[503, 500, 502])
    result = client.bulk_update_users(users(2))
    assert result.accepted_count == 2
    seen = requests_seen(control, "users/bulkUpdate")
    assert seen.get("200") == 1
    assert seen.get("503") == seen.get("500") == seen.get("502") == 1


def test_dropped_connection_and_timeout_are_retried(base_url: str, control: httpx.Client) -> None:
    faults(control, endpoint="channels", fail_next=["drop", "timeout"], hang_seconds=2.0)
    with IterableClient(KEY, base_url=base_url, retry=FAST_RETRY, timeout=0.3) as c:
        channels = c.get_channels()
    assert channels
    seen = requests_seen(control, "channels")
    assert seen.get("dropped") == 1
    assert seen.get("200") == 1


def test_retries_run_out(base_url: str, control: httpx.Client) -> None:
    faults(control, endpoint="channels", error_rate=1.0)
    policy = RetryPolicy(attempts=3, base_delay=0.001)
    with IterableClient(KEY, base_url=base_url, retry=policy) as c, pytest.raises(RetryableError) as info:
        c.get_channels()
    assert info.value.status in {500, 502, 503}
    assert sum(requests_seen(control, "channels").values()) == 3


def test_retry_after_from_the_stand_in(base_url: str, control: httpx.Client) -> None:
    faults(control, endpoint="users/bulkUpdate", fail_next=[429], retry_after=7)
    limiter = RecordingLimiter()
    policy = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01)
    with IterableClient(KEY, base_url=base_url, retry=policy, limiter=limiter) as c:
        assert c.bulk_update_users(users(1)).accepted_count == 1
    assert limiter.slowed == [("users/bulkUpdate", 7.0)]


def test_bad_key_is_permanent(base_url: str, control: httpx.Client) -> None:
    with (
        IterableClient("wrong", base_url=base_url, retry=FAST_RETRY) as c,
        pytest.raises(PermanentError) as info,
    ):
        c.get_channels()
    assert info.value.status == 401
    assert sum(requests_seen(control, "channels").values()) == 1


def test_stand_in_limits_answer_429_and_the_client_recovers(base_url: str, control: httpx.Client) -> None:
    # No limiter on our side: the stand-in's 5 requests/s answers 429 and Retry-After paces the retries.
    policy = RetryPolicy(attempts=6, base_delay=0.05, max_delay=1.5)
    errors: list[BaseException] = []
    with IterableClient(KEY, base_url=base_url, retry=policy) as c:

        def send(i: int) -> None:
            try:
                c.bulk_update_users(users(1, start=i))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    seen = requests_seen(control, "users/bulkUpdate")
    assert errors == []
    assert seen.get("200") == 8
    assert seen.get("429", 0) >= 1


def test_shared_limiter_avoids_429(base_url: str, control: httpx.Client) -> None:
    with IterableClient(KEY, base_url=base_url, retry=FAST_RETRY, limiter=iterable_limiter()) as c:
        for i in range(12):
            c.bulk_update_users(users(1, start=i))
    assert requests_seen(control, "users/bulkUpdate") == {"200": 12}


def no_limits(control: httpx.Client, **options: Any) -> None:
    # Splitting sends many small requests at once; the stand-in's 5/s would make these tests slow.
    control.post("/options", json={"limits_enabled": False, **options}).raise_for_status()


def test_split_on_413_isolates_nothing_when_parts_fit(client: IterableClient, control: httpx.Client) -> None:
    no_limits(control, max_body_bytes=3000)
    items = users(40, pad="x" * 40)
    result = send_splitting(items, client.bulk_update_users)
    assert result.size == 40
    assert result.failed_count == 0
    assert requests_seen(control, "users/bulkUpdate").get("413", 0) >= 1
    assert control.get("/stats").json()["users"] == 40


def test_split_isolates_a_type_mismatch(client: IterableClient, control: httpx.Client) -> None:
    no_limits(control)
    client.bulk_update_users([{"email": "first@example.com", "dataFields": {"seats": 5}}])
    items = users(9, seats=3)
    items[6]["dataFields"]["seats"] = "five"
    result = send_splitting(items, client.bulk_update_users)
    assert list(result.failures) == [6]
    assert result.failures[6].category is FailureCategory.INVALID_DATA
    assert "seats" in result.failures[6].reason
    assert result.accepted_count == 8


def test_batches_then_split_over_many_users(client: IterableClient, control: httpx.Client) -> None:
    control.post("/options", json={"max_body_bytes": 20_000}).raise_for_status()
    items = users(300)
    merged = [
        send_splitting(b, client.bulk_update_users) for b in batches(items, max_items=100, max_bytes=20_000)
    ]
    assert sum(r.accepted_count for r in merged) == 300
    assert requests_seen(control, "users/bulkUpdate") == {"200": 3}


def test_event_resend_with_same_id_updates(client: IterableClient, control: httpx.Client) -> None:
    control.post("/users", json=[{"email": "ev@example.com"}])
    event = {
        "email": "ev@example.com",
        "eventName": "saasTrialStarted",
        "id": event_id_from("customersdot", "e/1"),
    }
    assert client.track_events([event]).accepted_count == 1
    assert client.track_events([event]).accepted_count == 1
    stored = control.get("/events").json()
    assert list(stored) == [event["id"]]
    assert control.get("/stats").json()["event_writes"][event["id"]] == 2


def subscriptions_of(client: IterableClient, email: str) -> dict[str, Any]:
    user = client.get_user_by_email(email)
    assert user is not None
    return user.data_fields


def test_subscriptions_round_trip(client: IterableClient, base_url: str, control: httpx.Client) -> None:
    control.post("/users", json=[{"email": "sub@example.com", "userId": "sub-1"}])
    # Set-up through endpoints the client no longer sends (the stand-in still serves them).
    api_key = {"Api-Key": KEY}
    httpx.patch(
        f"{base_url}/api/subscriptions/messageType/101/user/sub%40example.com", headers=api_key
    ).raise_for_status()
    httpx.post(
        f"{base_url}/api/users/updateSubscriptions",
        json={"email": "sub@example.com", "emailListIds": [7]},
        headers=api_key,
    ).raise_for_status()
    before = subscriptions_of(client, "sub@example.com")
    assert 101 in before["subscribedMessageTypeIds"] and before["emailListIds"] == [7]

    assert client.unsubscribe("messageType", 101, email="sub@example.com").code == "Success"
    assert client.unsubscribe("emailList", 7, user_id="sub-1").code == "Success"
    after = subscriptions_of(client, "sub@example.com")
    assert 101 not in after["subscribedMessageTypeIds"] and after["emailListIds"] == []

    client.bulk_subscription("messageType", 101, "subscribe", emails=["sub@example.com"])
    assert 101 in subscriptions_of(client, "sub@example.com")["subscribedMessageTypeIds"]
    client.bulk_subscription("messageType", 101, "unsubscribe", emails=["sub@example.com"])
    result = client.bulk_update_subscriptions([{"email": "sub@example.com", "unsubscribedChannelIds": [1]}])
    assert result.accepted_count == 1
    final = subscriptions_of(client, "sub@example.com")
    assert 1 in final["unsubscribedChannelIds"] and 101 not in final["subscribedMessageTypeIds"]
    types = {t.name: t.subscription_policy for t in client.get_message_types()}
    assert types["GitLab Marketing"] == "OptIn"
