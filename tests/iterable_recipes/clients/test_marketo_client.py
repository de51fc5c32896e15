"""MarketoClient unit tests against a scripted Marketo (httpx.MockTransport), requests spec-checked."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from iterable_recipes.clients.errors import ApiError, PermanentError, QuotaExhaustedError, RetryableError
from iterable_recipes.clients.marketo import Lead
from iterable_recipes.clients.retry import NO_RETRY
from tests.iterable_recipes.clients.marketo_fakes import (
    BASE,
    SECRET,
    FakeMarketo,
    RecordingLimiter,
    fail,
    make_client,
    ok,
)

ACTIVITIES = "/rest/v1/activities.json"
CHANGES = "/rest/v1/activities/leadchanges.json"
LEADS = "/rest/v1/leads.json"
PAGING = "/rest/v1/activities/pagingtoken.json"


def activity(guid: str, lead_id: int, type_id: int = 9, **extra: object) -> dict[str, object]:
    return {
        "id": 1,
        "marketoGUID": guid,
        "leadId": lead_id,
        "activityDate": "2024-05-01T10:00:00Z",
        "activityTypeId": type_id,
        "primaryAttributeValue": "Newsletter",
        "attributes": [{"name": "Client IP Address", "value": "198.51.100.7"}],
        **extra,
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_is_fetched_once_cached_and_sent_as_bearer() -> None:
    fake = FakeMarketo()
    fake.queue(LEADS, ok(result=[]))
    client, transport = make_client(fake)
    with client:
        client.get_leads_by_ids([1])
        client.get_leads_by_ids([2])
    (identity,) = fake.identity_requests()
    assert identity.url.path == "/identity/oauth/token"
    assert identity.url.params["grant_type"] == "client_credentials"
    assert identity.url.params["client_secret"] == SECRET
    assert [r.headers["authorization"] for r in fake.rest_requests()] == ["Bearer token-1"] * 2
    assert "access_token" not in str(fake.rest_requests()[0].url)
    assert len(transport.checked) == 3 and not transport.violations


def test_identity_url_can_be_given() -> None:
    fake = FakeMarketo()
    fake.queue(LEADS, ok(result=[]))
    client, _ = make_client(fake, identity_url=f"{BASE}/identity/")
    with client:
        client.get_leads_by_ids([1])
    assert str(fake.identity_requests()[0].url).startswith(f"{BASE}/identity/oauth/token?")


def test_token_is_renewed_a_minute_before_expiry() -> None:
    fake, clock = FakeMarketo(expires_in=3600), Clock()
    fake.queue(LEADS, ok(result=[]))
    client, _ = make_client(fake, clock=clock)
    with client:
        client.get_leads_by_ids([1])
        clock.now += 3600 - 61
        client.get_leads_by_ids([1])
        assert fake.tokens_issued == 1
        clock.now += 2  # 59 s left: inside the margin
        client.get_leads_by_ids([1])
    assert fake.tokens_issued == 2
    assert fake.rest_requests()[-1].headers["authorization"] == "Bearer token-2"


def test_short_lived_token_is_used_until_it_runs_out_not_refetched_per_call() -> None:
    fake, clock = FakeMarketo(expires_in=30), Clock()
    fake.queue(LEADS, ok(result=[]))
    client, _ = make_client(fake, clock=clock)
    with client:
        for _ in range(3):
            client.get_leads_by_ids([1])
        assert fake.tokens_issued == 1
        clock.now += 31
        client.get_leads_by_ids([1])
    assert fake.tokens_issued == 2


@pytest.mark.parametrize("code", ["601", "602"])
def test_601_602_renew_the_token_and_resend_once(code: str) -> None:
    fake = FakeMarketo()
    fake.queue(LEADS, fail(code), ok(result=[{"id": 7, "email": "a@example.com", "unsubscribed": True}]))
    client, _ = make_client(fake, retry=NO_RETRY)
    with client:
        leads = client.get_leads_by_ids([7])
    assert [lead.id for lead in leads] == [7]
    assert fake.tokens_issued == 2
    assert [r.headers["authorization"] for r in fake.rest_requests()] == ["Bearer token-1", "Bearer token-2"]


def test_token_refused_again_after_renewal_is_retryable_not_a_loop() -> None:
    fake = FakeMarketo()
    fake.queue(LEADS, fail("601"))
    client, _ = make_client(fake, retry=NO_RETRY)
    with client, pytest.raises(RetryableError) as info:
        client.get_leads_by_ids([7])
    assert info.value.code == "601"
    assert len(fake.rest_requests()) == 2


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("604", RetryableError),
        ("606", RetryableError),
        ("608", RetryableError),
        ("611", RetryableError),
        ("615", RetryableError),
        ("713", RetryableError),
        ("603", PermanentError),
        ("607", QuotaExhaustedError),
        ("1003", PermanentError),
    ],
)
def test_error_codes_map_onto_the_error_tree(code: str, error: type[ApiError]) -> None:
    fake = FakeMarketo()
    fake.queue(ACTIVITIES, fail(code))
    client, _ = make_client(fake, retry=NO_RETRY)
    with client, pytest.raises(error) as info:
        list(client.iter_activities("TOKEN"))
    assert type(info.value) is error
    assert info.value.code == code
    assert info.value.endpoint == ACTIVITIES


def test_606_sets_a_20s_hint_and_slows_the_shared_limiter() -> None:
    fake = FakeMarketo()
    fake.queue(LEADS, fail("606"), fail("606"), ok(result=[]))
    limiter = RecordingLimiter()
    client, _ = make_client(fake, limiter=limiter)
    with client:
        assert client.get_leads_by_ids([1]) == []
    assert len(fake.rest_requests()) == 3
    assert [name for name, _ in limiter.slowed] == ["marketo", "marketo"]
    # The policy caps the 20 s hint (max_delay 5 ms in tests).
    assert all(seconds is not None and 0 < seconds <= 0.005 for _, seconds in limiter.slowed)


def test_retryable_codes_are_retried_until_success() -> None:
    fake = FakeMarketo()
    fake.queue(LEADS, fail("615"), fail("604"), fail("713"), ok(result=[{"id": 1}]))
    client, _ = make_client(fake)
    with client:
        assert [lead.id for lead in client.get_leads_by_ids([1])] == [1]
    assert len(fake.rest_requests()) == 4


def test_607_stops_at_once_with_a_clear_message() -> None:
    fake = FakeMarketo()
    fake.queue(LEADS, fail("607"))
    client, _ = make_client(fake)
    with client, pytest.raises(QuotaExhaustedError) as info:
        client.get_leads_by_ids([1])
    assert len(fake.rest_requests()) == 1
    assert "daily API quota" in str(info.value)


def test_http_5xx_and_transport_errors_are_retryable() -> None:
    fake = FakeMarketo()
    fake.queue(LEADS, httpx.Response(503, text="down"), httpx.ConnectError("refused"), ok(result=[]))
    client, _ = make_client(fake)
    with client:
        assert client.get_leads_by_ids([1]) == []
    assert len(fake.rest_requests()) == 3
    fake2 = FakeMarketo()
    fake2.queue(LEADS, httpx.Response(502, text="bad gateway"))
    client2, _ = make_client(fake2, retry=NO_RETRY)
    with client2, pytest.raises(RetryableError) as info:
        client2.get_leads_by_ids([1])
    assert info.value.status == 502


def test_identity_failures_never_reveal_the_secret() -> None:
    fake = FakeMarketo()
    fake.identity_answers.extend(
        [httpx.ConnectError(f"cannot reach {BASE}/identity/oauth/token?client_secret={SECRET}")]
    )
    client, _ = make_client(fake, retry=NO_RETRY)
    with client:
        with pytest.raises(RetryableError) as info:
            client.get_leads_by_ids([1])
        fake.identity_answers.append(httpx.Response(401, json={"error": "unauthorized"}))
        with pytest.raises(PermanentError) as refused:
            client.get_leads_by_ids([1])
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert refused.value.status == 401 and SECRET not in str(refused.value)


def test_error_messages_do_not_copy_marketo_text() -> None:
    fake = FakeMarketo()
    body = fail("1003")
    body["errors"][0]["message"] = "Invalid email person@example.com"
    fake.queue(LEADS, body)
    client, _ = make_client(fake)
    with client, pytest.raises(PermanentError) as info:
        client.get_leads_by_ids([1])
    assert "@" not in str(info.value) and "1003" in str(info.value)


def test_paging_follows_empty_pages_while_more_result() -> None:
    fake = FakeMarketo()
    fake.queue(
        ACTIVITIES,
        ok(result=[], nextPageToken="T2", moreResult=True),
        ok(result=[], nextPageToken="T3", moreResult=True),
        ok(result=[activity("g-1", 5)], nextPageToken="T4", moreResult=True),
        ok(result=[], nextPageToken="T5", moreResult=False),
    )
    client, _ = make_client(fake)
    with client:
        pages = list(client.iter_activities("T1", activity_type_ids=(9, 13)))
    assert [len(p.items) for p in pages] == [0, 0, 1, 0]
    assert [p.next_page_token for p in pages] == ["T2", "T3", "T4", "T5"]
    assert [p.more_result for p in pages] == [True, True, True, False]
    sent = [r.url.params["nextPageToken"] for r in fake.rest_requests(ACTIVITIES)]
    assert sent == ["T1", "T2", "T3", "T4"]
    assert fake.rest_requests(ACTIVITIES)[0].url.params["activityTypeIds"] == "9,13"
    item = pages[2].items[0]
    assert (item.marketoGUID, item.leadId, item.key, item.sets_unsubscribed()) == ("g-1", 5, "g-1", True)
    assert item.activityDate == datetime(2024, 5, 1, 10, tzinfo=UTC)


def test_a_page_that_does_not_move_the_token_stops_the_loop() -> None:
    fake = FakeMarketo()
    fake.queue(ACTIVITIES, ok(result=[], nextPageToken="T1", moreResult=True))
    client, _ = make_client(fake)
    with client, pytest.raises(PermanentError):
        list(client.iter_activities("T1"))
    assert len(fake.rest_requests()) == 1


def test_lead_changes_carry_fields_and_recognise_unsubscribes() -> None:
    unsub = {"id": 49, "name": "unsubscribed", "newValue": "true", "oldValue": "false"}
    resub = {"id": 49, "name": "unsubscribed", "newValue": "false", "oldValue": "true"}
    fake = FakeMarketo()
    fake.queue(
        CHANGES,
        ok(
            result=[activity("g-1", 1, 13, fields=[unsub]), activity("g-2", 2, 13, fields=[resub])],
            nextPageToken="T2",
            moreResult=False,
        ),
    )
    client, _ = make_client(fake)
    with client:
        (page,) = list(client.iter_lead_changes("T1"))
    assert [a.sets_unsubscribed() for a in page.items] == [True, False]
    assert page.items[0].fields[0].newValue == "true"
    assert fake.rest_requests(CHANGES)[0].url.params["fields"] == "unsubscribed"


def test_leads_are_asked_for_in_chunks_of_300() -> None:
    fake = FakeMarketo()

    def echo(request: httpx.Request) -> httpx.Response:
        ids = request.url.params["filterValues"].split(",")
        return httpx.Response(200, json=ok(result=[{"id": int(i), "email": f"{i}@example.com"} for i in ids]))

    fake.queue(LEADS, echo)
    client, transport = make_client(fake)
    ids = [*range(1, 651), 5, 6]  # repeats are asked for once
    with client:
        leads = client.get_leads_by_ids(ids, fields=("email", "unsubscribed"))
    sizes = [len(r.url.params["filterValues"].split(",")) for r in fake.rest_requests(LEADS)]
    assert sizes == [300, 300, 50]
    assert [lead.id for lead in leads] == list(range(1, 651))
    first = fake.rest_requests(LEADS)[0].url.params
    assert (first["filterType"], first["fields"]) == ("id", "id,email,unsubscribed")
    assert not transport.violations


def test_paging_token_sends_utc_and_treats_naive_as_utc() -> None:
    fake = FakeMarketo()
    fake.queue(PAGING, ok(nextPageToken="START"))
    client, _ = make_client(fake)
    with client:
        assert client.get_paging_token(datetime(2024, 5, 1, 12, 0, 0)) == "START"
        client.get_paging_token(datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))))
    sent = [r.url.params["sinceDatetime"] for r in fake.rest_requests(PAGING)]
    assert sent == ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"]


def test_limiter_is_asked_once_per_rest_call_not_for_identity() -> None:
    fake = FakeMarketo()
    fake.queue(LEADS, ok(result=[]))
    limiter = RecordingLimiter()
    client, _ = make_client(fake, limiter=limiter)
    with client:
        client.get_leads_by_ids([1])
        client.get_leads_by_ids([2])
    assert limiter.acquired == ["marketo", "marketo"]


def test_concurrency_is_bounded_by_max_concurrent() -> None:
    in_flight, peak, lock = 0, 0, threading.Lock()

    def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.02)
        with lock:
            in_flight -= 1
        return httpx.Response(200, json=ok(result=[]))

    fake = FakeMarketo()
    fake.queue(LEADS, slow)
    client, _ = make_client(fake, max_concurrent=2)
    with client:
        threads = [threading.Thread(target=client.get_leads_by_ids, args=([i],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(fake.rest_requests()) == 8
    assert 1 <= peak <= 2


def test_argument_limits() -> None:
    client, _ = make_client(FakeMarketo())
    with client:
        with pytest.raises(ValueError):
            list(client.iter_activities("T", activity_type_ids=tuple(range(11))))
        with pytest.raises(ValueError):
            list(client.iter_lead_changes("T", fields=()))
    with pytest.raises(ValueError):
        make_client(FakeMarketo(), max_concurrent=0)


def test_lead_repr_holds_no_email() -> None:
    lead = Lead.model_validate({"id": 3, "email": "person@example.com", "unsubscribed": False})
    assert "person@example.com" not in repr(lead) and lead.email == "person@example.com"
