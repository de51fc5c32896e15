"""The Marketo spec check itself: it passes the requests we send and catches the mistakes it is for."""

from __future__ import annotations

import httpx
import pytest

from tests.contract.marketo_spec import (
    MarketoSpecCheckingTransport,
    MarketoSpecViolation,
    validate_marketo_request,
    validate_marketo_response,
)

BASE = "https://123-abc-456.mktorest.test"


@pytest.mark.parametrize(
    "url",
    [
        "/identity/oauth/token?grant_type=client_credentials&client_id=a&client_secret=b",
        "/rest/v1/activities/pagingtoken.json?sinceDatetime=2024-05-01T00%3A00%3A00Z",
        "/rest/v1/activities.json?activityTypeIds=9%2C13&nextPageToken=ABC",
        "/rest/v1/activities.json?activityTypeIds=9&activityTypeIds=13&nextPageToken=ABC",
        "/rest/v1/activities/leadchanges.json?fields=unsubscribed&nextPageToken=ABC",
        "/rest/v1/leads.json?filterType=id&filterValues=1%2C2&fields=id%2Cemail",
    ],
)
def test_requests_we_send_pass(url: str) -> None:
    validate_marketo_request("GET", BASE + url)


@pytest.mark.parametrize(
    ("method", "url", "why"),
    [
        ("GET", "/rest/v1/activity.json?nextPageToken=A&activityTypeIds=9", "no such operation"),
        ("DELETE", "/rest/v1/activities.json?nextPageToken=A&activityTypeIds=9", "no such operation"),
        ("GET", "/rest/v1/activities.json?nextPageToken=A", "activityTypeIds is missing"),
        ("GET", "/rest/v1/activities.json?nextPageToken=A&activityTypeIds=unsub", "not an integer"),
        ("GET", "/rest/v1/activities.json?nextPageToken=A&activityTypeIds=9&access_token=t", "unknown"),
        ("GET", "/rest/v1/activities/pagingtoken.json?sinceDatetime=yesterday", "date-time"),
        ("GET", "/rest/v1/leads.json?filterType=id&filterValues=1&batchSize=many", "not an integer"),
        ("GET", "/rest/v1/leads.json?filterType=id&filterValues=1%2C%2C2", "empty item"),
        ("GET", "/identity/oauth/token?grant_type=password&client_id=a&client_secret=b", "allowed values"),
    ],
)
def test_mistakes_are_caught(method: str, url: str, why: str) -> None:
    with pytest.raises(MarketoSpecViolation, match=why):
        validate_marketo_request(method, BASE + url)


def test_violations_name_parameters_not_values() -> None:
    with pytest.raises(MarketoSpecViolation) as info:
        validate_marketo_request("GET", f"{BASE}/identity/oauth/token?client_secret=hunter2&grant_type=x")
    assert "client_id" in str(info.value) and "hunter2" not in str(info.value)


def test_responses_are_checked_against_the_schema() -> None:
    url = f"{BASE}/rest/v1/activities.json"
    good = {"requestId": "r", "success": True, "errors": [], "warnings": [], "result": []}
    validate_marketo_response("GET", url, good)
    with pytest.raises(MarketoSpecViolation, match="required"):
        validate_marketo_response("GET", url, {"requestId": "r", "success": True})
    bad_item = good | {"result": [{"leadId": "one", "activityDate": "x", "activityTypeId": 9, "id": 1}]}
    with pytest.raises(MarketoSpecViolation):
        validate_marketo_response("GET", url, bad_item)


def test_transport_wrapper_blocks_bad_requests_and_counts_good_ones() -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        return httpx.Response(200, json={"requestId": "r", "success": True, "errors": [], "warnings": []})

    transport = MarketoSpecCheckingTransport(httpx.MockTransport(handler))
    with httpx.Client(transport=transport, base_url=BASE) as http:
        http.get("/rest/v1/activities/pagingtoken.json", params={"sinceDatetime": "2024-05-01T00:00:00Z"})
        with pytest.raises(MarketoSpecViolation):
            http.get("/rest/v1/leads.json", params={"filterValues": "1"})
    assert sent == ["/rest/v1/activities/pagingtoken.json"]
    assert transport.checked == ["GET /rest/v1/activities/pagingtoken.json"]
    assert len(transport.violations) == 1
