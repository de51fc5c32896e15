"""MarketoClient against the stand-in over real sockets, every request and answer checked against the spec."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from dev.standins.marketo import MarketoSandbox, create_app
from dev.standins.serving import serving
from iterable_recipes.clients.errors import PermanentError, QuotaExhaustedError
from iterable_recipes.clients.limiter import NoLimiter
from iterable_recipes.clients.marketo import ActivityPage, MarketoClient
from iterable_recipes.clients.retry import RetryPolicy
from tests.contract.marketo_spec import MarketoSpecCheckingTransport, require_specs

FAST = RetryPolicy(attempts=5, base_delay=0.001, max_delay=0.005, jitter=0.0)
START = datetime.now(UTC) - timedelta(hours=2)
ACTIVITIES = "GET /rest/v1/activities.json"
LEADS = "GET /rest/v1/leads.json"


class Stand:
    """A served stand-in, its state, and a way to build spec-checked clients for it."""

    def __init__(self, url: str, sandbox: MarketoSandbox) -> None:
        self.url = url
        self.sandbox = sandbox
        self.transports: list[MarketoSpecCheckingTransport] = []

    def client(self, secret: str = "sandbox-secret", **kwargs: Any) -> MarketoClient:
        transport = MarketoSpecCheckingTransport(httpx.HTTPTransport())
        self.transports.append(transport)
        options: dict[str, Any] = {"limiter": NoLimiter(), "retry": FAST} | kwargs
        return MarketoClient(self.url, "sandbox-client", secret, transport=transport, **options)


@pytest.fixture
def stand() -> Iterator[Stand]:
    require_specs()  # skipped before serving when the specs are absent, not failed in teardown
    app = create_app({"scan_window": 7})
    sandbox: MarketoSandbox = app.state.sandbox
    for lead_id in range(1, 9):
        sandbox.add_lead(lead_id, f"person{lead_id}@example.com")
    sandbox.add_noise(20, at=START)
    sandbox.unsubscribe(1, "link", at=START + timedelta(minutes=1))
    sandbox.add_noise(15, at=START + timedelta(minutes=2))
    sandbox.unsubscribe(2, "form", at=START + timedelta(minutes=3))
    sandbox.add_noise(15, at=START + timedelta(minutes=4))
    sandbox.unsubscribe(3, "salesforce", at=START + timedelta(minutes=5))
    sandbox.add_noise(10, at=START + timedelta(minutes=6))
    with serving(app) as url:
        stand = Stand(url, sandbox)
        yield stand
    checked = [path for t in stand.transports for path in t.checked]
    violations = [v for t in stand.transports for v in t.violations]
    assert checked, "no request went through the spec check"
    assert not violations


def unsubscribed_leads(pages: list[ActivityPage]) -> set[int]:
    return {a.leadId for page in pages for a in page.items if a.sets_unsubscribed()}


def test_polling_finds_link_form_and_salesforce_unsubscribes(stand: Stand) -> None:
    with stand.client() as client:
        token = client.get_paging_token(START - timedelta(seconds=1))
        activity_pages = list(client.iter_activities(token))
        change_pages = list(client.iter_lead_changes(token))
        leads = client.get_leads_by_ids(sorted(unsubscribed_leads(activity_pages + change_pages)))
    assert unsubscribed_leads(activity_pages) == {1}  # type 9: the email link only
    assert unsubscribed_leads(change_pages) == {1, 2, 3}  # the field itself: every way
    assert any(not p.items and p.more_result for p in activity_pages), "expected empty pages"
    assert not activity_pages[-1].more_result and all(p.more_result for p in activity_pages[:-1])
    assert all(a.activityTypeId == 9 for p in activity_pages for a in p.items)
    assert {(lead.id, lead.unsubscribed) for lead in leads} == {(1, True), (2, True), (3, True)}
    assert {lead.email for lead in leads} == {f"person{i}@example.com" for i in (1, 2, 3)}
    # 64 activities (the link logs two) scanned 7 at a time: 10 pages.
    assert stand.sandbox.calls(ACTIVITIES) == len(activity_pages) == 10


def test_the_last_token_resumes_the_next_poll(stand: Stand) -> None:
    with stand.client() as client:
        token = client.get_paging_token(START - timedelta(seconds=1))
        cursor = [p.next_page_token for p in client.iter_lead_changes(token)][-1]
        stand.sandbox.unsubscribe(4, "form")
        stand.sandbox.add_noise(3)
        pages = list(client.iter_lead_changes(cursor))
    assert unsubscribed_leads(pages) == {4}
    guids = [a.marketoGUID for p in pages for a in p.items]
    assert len(guids) == len(set(guids)) == 1


def test_token_expiring_mid_run_is_renewed_and_nothing_is_lost(stand: Stand) -> None:
    with stand.client() as client:
        token = client.get_paging_token(START - timedelta(seconds=1))
        stand.sandbox.set_faults(expire_tokens_after=3)
        pages = list(client.iter_lead_changes(token))
    stats = stand.sandbox.stats()
    assert stats["errors"].get("602") == 1
    assert stats["tokens_issued"] == 2
    assert unsubscribed_leads(pages) == {1, 2, 3}


def test_token_invalidated_is_renewed(stand: Stand) -> None:
    with stand.client() as client:
        client.get_leads_by_ids([1])
        stand.sandbox.set_faults(invalidate_tokens=True)
        assert [lead.id for lead in client.get_leads_by_ids([1])] == [1]
    assert stand.sandbox.stats()["errors"].get("601") == 1


def test_606_burst_then_success(stand: Stand) -> None:
    stand.sandbox.set_faults(rate_limited_calls=3)
    with stand.client() as client:
        leads = client.get_leads_by_ids([5, 6])
    assert [lead.id for lead in leads] == [5, 6]
    assert stand.sandbox.stats()["errors"]["606"] == 3
    assert stand.sandbox.calls(LEADS) == 4


def test_615_then_success(stand: Stand) -> None:
    stand.sandbox.set_faults(concurrency_limited_calls=2)
    with stand.client() as client:
        assert [lead.id for lead in client.get_leads_by_ids([7])] == [7]
    assert stand.sandbox.stats()["errors"]["615"] == 2


def test_607_stops_with_a_clear_error(stand: Stand) -> None:
    stand.sandbox.set_faults(quota_exhausted=True)
    with stand.client() as client, pytest.raises(QuotaExhaustedError) as info:
        client.get_leads_by_ids([1])
    assert "quota" in str(info.value) and info.value.code == "607"
    assert stand.sandbox.calls(LEADS) == 1


def test_603_is_permanent(stand: Stand) -> None:
    stand.sandbox.set_faults(access_denied_calls=1)
    with stand.client() as client, pytest.raises(PermanentError) as info:
        client.get_leads_by_ids([1])
    assert info.value.code == "603" and stand.sandbox.calls(LEADS) == 1


def test_wrong_secret_is_permanent_and_not_echoed(stand: Stand) -> None:
    with stand.client(secret="wrong-secret-xyz") as client, pytest.raises(PermanentError) as info:
        client.get_leads_by_ids([1])
    assert info.value.status == 401 and "wrong-secret-xyz" not in str(info.value)


def test_client_keeps_within_its_concurrency_share(stand: Stand) -> None:
    stand.sandbox.options.latency = 0.02
    with stand.client(max_concurrent=3) as client:
        threads = [threading.Thread(target=client.get_leads_by_ids, args=([i],)) for i in range(1, 9)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    stats = stand.sandbox.stats()
    assert stats["calls"][LEADS] == 8
    assert 1 <= stats["max_in_flight"] <= 3
