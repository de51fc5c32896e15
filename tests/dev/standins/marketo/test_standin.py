"""The Marketo stand-in on its own, over real sockets with plain httpx: Marketo's behaviours it must copy."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from dev.standins.marketo import MarketoSandbox, create_app
from dev.standins.serving import free_port, serving
from tests.contract.marketo_spec import validate_marketo_response

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
CREDS = {"grant_type": "client_credentials", "client_id": "sandbox-client", "client_secret": "sandbox-secret"}


class Api:
    def __init__(self, http: httpx.Client, sandbox: MarketoSandbox) -> None:
        self.http = http
        self.sandbox = sandbox
        self.token = http.get("/identity/oauth/token", params=CREDS).json()["access_token"]

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = self.http.get(path, params=params, headers={"Authorization": f"Bearer {self.token}"})
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        validate_marketo_response("GET", path, body)
        return body


def serve(options: dict[str, Any] | None = None) -> Iterator[Api]:
    app = create_app(options)
    with serving(app) as url, httpx.Client(base_url=url) as http:
        yield Api(http, app.state.sandbox)


@pytest.fixture
def api() -> Iterator[Api]:
    yield from serve({"scan_window": 4})


def error_code(body: dict[str, Any]) -> str:
    assert body["success"] is False
    return str(body["errors"][0]["code"])


def test_identity_hands_back_the_same_token_while_valid(api: Api) -> None:
    first = api.http.get("/identity/oauth/token", params=CREDS).json()
    second = api.http.post("/identity/oauth/token", params=CREDS).json()
    assert first["access_token"] == second["access_token"] == api.token
    assert first["token_type"] == "bearer" and 0 < second["expires_in"] <= 3600
    bad = api.http.get("/identity/oauth/token", params=CREDS | {"client_secret": "nope"})
    assert bad.status_code == 401
    api.sandbox.expire_tokens()
    assert api.http.get("/identity/oauth/token", params=CREDS).json()["access_token"] != api.token


def test_errors_are_http_200_with_success_false(api: Api) -> None:
    missing = api.http.get("/rest/v1/leads.json", params={"filterType": "id", "filterValues": "1"})
    assert missing.status_code == 200 and error_code(missing.json()) == "600"
    bogus = api.http.get(
        "/rest/v1/leads.json",
        params={"filterType": "id", "filterValues": "1"},
        headers={"Authorization": "Bearer bogus"},
    )
    assert error_code(bogus.json()) == "601"
    api.sandbox.expire_tokens()
    assert error_code(api.get("/rest/v1/leads.json", filterType="id", filterValues="1")) == "602"


def test_each_page_scans_a_fixed_window_of_all_types(api: Api) -> None:
    for lead_id in (1, 2):
        api.sandbox.add_lead(lead_id, f"p{lead_id}@example.com")
    api.sandbox.add_noise(9, at=T0)
    api.sandbox.unsubscribe(2, "link", at=T0 + timedelta(seconds=1))  # activities 10 (type 9), 11 (13)
    api.sandbox.add_noise(1, at=T0 + timedelta(seconds=2))
    token = api.get("/rest/v1/activities/pagingtoken.json", sinceDatetime="2024-05-01T08:59:00Z")[
        "nextPageToken"
    ]
    pages = []
    while True:
        body = api.get("/rest/v1/activities.json", nextPageToken=token, activityTypeIds="9")
        pages.append(([a["leadId"] for a in body["result"]], body["moreResult"]))
        token = body["nextPageToken"]
        if not body["moreResult"]:
            break
    assert pages == [([], True), ([], True), ([2], False)]
    again = api.get("/rest/v1/activities.json", nextPageToken=token, activityTypeIds="9")
    assert (again["result"], again["moreResult"], again["nextPageToken"]) == ([], False, token)


def test_since_datetime_skips_older_activities(api: Api) -> None:
    api.sandbox.add_lead(1, "p1@example.com")
    api.sandbox.unsubscribe(1, "link", at=T0)
    later = api.get("/rest/v1/activities/pagingtoken.json", sinceDatetime="2024-05-01T09:00:01Z")
    body = api.get("/rest/v1/activities.json", nextPageToken=later["nextPageToken"], activityTypeIds="9")
    assert body["result"] == [] and body["moreResult"] is False


def test_how_decides_what_is_logged() -> None:
    sandbox = MarketoSandbox()
    for lead_id in (1, 2, 3):
        sandbox.add_lead(lead_id, f"p{lead_id}@example.com")
    assert len(sandbox.unsubscribe(1, "link", at=T0)) == 2
    assert len(sandbox.unsubscribe(2, "form", at=T0)) == 1
    assert len(sandbox.unsubscribe(3, "salesforce", at=T0)) == 1
    assert len(sandbox.unsubscribe(3, "form", at=T0)) == 0  # already unsubscribed: no change logged
    assert len(sandbox.unsubscribe(1, "link", at=T0)) == 1  # a click still logs type 9
    lead = sandbox.lead(2)
    assert lead is not None and lead["unsubscribed"] is True
    with pytest.raises(KeyError):
        sandbox.unsubscribe(99, "form")
    with pytest.raises(ValueError):
        sandbox.unsubscribe(1, "carrier-pigeon")  # type: ignore[arg-type]


def test_lead_changes_return_only_the_asked_fields(api: Api) -> None:
    api.sandbox.add_lead(1, "p1@example.com")
    api.sandbox.add_noise(30, at=T0)  # includes changes of other fields
    api.sandbox.unsubscribe(1, "salesforce", at=T0 + timedelta(seconds=1))
    token = api.get("/rest/v1/activities/pagingtoken.json", sinceDatetime="2024-05-01T08:00:00Z")[
        "nextPageToken"
    ]
    found = []
    more = True
    while more:
        body = api.get("/rest/v1/activities/leadchanges.json", nextPageToken=token, fields="unsubscribed")
        found += body["result"]
        token, more = body["nextPageToken"], body["moreResult"]
    assert len(found) == 1
    assert found[0]["activityTypeId"] == 13
    assert found[0]["fields"] == [{"id": 49, "name": "unsubscribed", "newValue": "true", "oldValue": "false"}]


def test_pages_hold_at_most_300() -> None:
    for api in serve():
        for lead_id in range(1, 351):
            api.sandbox.add_lead(lead_id, f"p{lead_id}@example.com")
            api.sandbox.unsubscribe(lead_id, "link", at=T0)
        token = api.get("/rest/v1/activities/pagingtoken.json", sinceDatetime="2024-05-01T00:00:00Z")[
            "nextPageToken"
        ]
        sizes, more = [], True
        while more:
            body = api.get("/rest/v1/activities.json", nextPageToken=token, activityTypeIds="9,13")
            sizes.append(len(body["result"]))
            token, more = body["nextPageToken"], body["moreResult"]
        assert sizes == [300, 300, 100]


def test_leads_by_id_and_limits(api: Api) -> None:
    api.sandbox.add_lead(1, "p1@example.com")
    api.sandbox.add_lead(2, "p2@example.com", unsubscribed=True)
    fields = "email,unsubscribed"
    body = api.get("/rest/v1/leads.json", filterType="id", filterValues="2,1,404", fields=fields)
    assert body["result"] == [
        {"id": 1, "email": "p1@example.com", "unsubscribed": False},
        {"id": 2, "email": "p2@example.com", "unsubscribed": True},
    ]
    too_many = ",".join(str(i) for i in range(301))
    assert error_code(api.get("/rest/v1/leads.json", filterType="id", filterValues=too_many)) == "1003"
    unknown = api.get("/rest/v1/leads.json", filterType="id", filterValues="1", fields="shoeSize")
    assert error_code(unknown) == "1006"
    long_uri = api.http.get(
        "/rest/v1/leads.json",
        params={"filterType": "email", "filterValues": "x" * 9000},
        headers={"Authorization": f"Bearer {api.token}"},
    )
    assert long_uri.status_code == 414


def test_activity_type_ids_limit_and_bad_token(api: Api) -> None:
    token = api.get("/rest/v1/activities/pagingtoken.json", sinceDatetime="2024-05-01T00:00:00Z")[
        "nextPageToken"
    ]
    eleven = ",".join(str(i) for i in range(1, 12))
    path = "/rest/v1/activities.json"
    assert error_code(api.get(path, nextPageToken=token, activityTypeIds=eleven)) == "1003"
    assert error_code(api.get(path, nextPageToken="garbage", activityTypeIds="9")) == "1003"


def test_its_own_rate_and_quota_limits() -> None:
    for api in serve({"rate_limit": 2, "daily_quota": 3}):
        codes = []
        for _ in range(3):
            body = api.get("/rest/v1/leads.json", filterType="id", filterValues="1")
            codes.append(None if body["success"] else error_code(body))
        assert codes == [None, None, "606"]
        api.sandbox.options.rate_limit = 100
        assert api.get("/rest/v1/leads.json", filterType="id", filterValues="1")["success"] is True
        assert error_code(api.get("/rest/v1/leads.json", filterType="id", filterValues="1")) == "607"
        assert api.sandbox.stats()["errors"] == {"606": 1, "607": 1}


def test_server_error_fault_is_an_http_503(api: Api) -> None:
    api.sandbox.set_faults(server_error_calls=1)
    first = api.http.get(
        "/rest/v1/leads.json",
        params={"filterType": "id", "filterValues": "1"},
        headers={"Authorization": f"Bearer {api.token}"},
    )
    assert first.status_code == 503
    assert api.get("/rest/v1/leads.json", filterType="id", filterValues="1")["success"] is True


def test_control_api(api: Api) -> None:
    http = api.http
    assert http.post("/_sandbox/leads", json={"leads": [{"id": 5, "email": "p5@example.com"}]}).json() == {
        "added": 1
    }
    made = http.post("/_sandbox/unsubscribe", json={"lead_id": 5, "how": "link"}).json()
    assert len(made["activities"]) == 2
    assert http.post("/_sandbox/unsubscribe", json={"lead_id": 6, "how": "form"}).status_code == 404
    assert http.post("/_sandbox/noise", json={"n": 4}).json() == {"added": 4}
    assert http.post("/_sandbox/faults", json={"rate_limited_calls": 1}).json()["rate_limited_calls"] == 1
    assert http.post("/_sandbox/faults", json={"no_such_fault": 1}).status_code == 422
    assert error_code(api.get("/rest/v1/leads.json", filterType="id", filterValues="5")) == "606"
    stats = http.get("/_sandbox/stats").json()
    assert stats["calls"] == {"GET /rest/v1/leads.json": 1}
    assert (stats["errors"], stats["activities"], stats["leads"]) == ({"606": 1}, 6, 1)
    assert http.post("/_sandbox/reset").json() == {"reset": True}
    assert http.get("/_sandbox/stats").json()["activities"] == 0


def test_runs_standalone_as_a_module() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dev.standins.marketo", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/_sandbox/stats", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("standalone stand-in did not start")
                time.sleep(0.1)
        assert response.json()["activities"] == 0
        token = httpx.get(f"http://127.0.0.1:{port}/identity/oauth/token", params=CREDS).json()
        assert token["token_type"] == "bearer"
    finally:
        process.terminate()
        process.wait(timeout=10)
