"""Static lists: the client against the stand-in over a real socket, every request checked by the spec."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dev.standins.iterable.app import create_app
from dev.standins.iterable.options import SandboxOptions
from dev.standins.serving import serving
from iterable_recipes.clients.errors import PermanentError, RetryableError
from iterable_recipes.clients.iterable import IterableClient, paced_rates
from iterable_recipes.clients.iterable_models import FailureCategory, ListMember
from iterable_recipes.clients.retry import NO_RETRY
from tests.contract.iterable_spec import SpecCheckingTransport
from tests.dev.standins.iterable.spec import assert_matches

KEY = "sandbox-key"
KNOWN = ["ada@example.com", "bob@example.com"]


@pytest.fixture
def served() -> Iterator[tuple[str, Any]]:
    app = create_app(SandboxOptions())
    with serving(app) as url:
        yield url, app.state.sandbox


@pytest.fixture
def checked(served: tuple[str, Any]) -> Iterator[tuple[IterableClient, SpecCheckingTransport, Any]]:
    url, sandbox = served
    transport = SpecCheckingTransport(httpx.HTTPTransport())
    client = IterableClient(KEY, base_url=url, transport=transport, retry=NO_RETRY, timeout=5)
    sandbox.seed_users([{"email": e, "unsubscribedChannelIds": [3], "subscribedMessageTypeIds": [101]}
                        for e in KNOWN])  # fmt: skip
    try:
        yield client, transport, sandbox
    finally:
        client.close()
        assert transport.violations == [], transport.violations


def test_create_list_subscribe_read_back_and_unsubscribe(checked: Any) -> None:
    client, transport, sandbox = checked
    list_id = client.create_list("Trial onboarding", "members of the trial journey")
    assert [(item.id, item.list_type) for item in client.get_lists()] == [(list_id, "Standard")]

    added = client.subscribe_to_list(list_id, [{"email": KNOWN[0]}, ListMember(email=KNOWN[1])])
    assert added.failures == {} and added.accepted_count == 2
    assert client.get_list_users(list_id) == KNOWN
    assert client.get_list_size(list_id) == 2
    # Joining a list touches emailListIds only: the person's channels and message types stay.
    assert sandbox.user(KNOWN[0])["unsubscribedChannelIds"] == [3]
    assert sandbox.user(KNOWN[0])["subscribedMessageTypeIds"] == [101]

    removed = client.unsubscribe_from_list(list_id, [{"email": KNOWN[0]}])
    assert removed.failures == {}
    assert client.get_list_users(list_id) == [KNOWN[1]]
    assert sandbox.user(KNOWN[0])["unsubscribedChannelIds"] == [3]  # channelUnsubscribe false

    bodies = {path: body for method, path, body in transport.sent if method == "POST"}
    assert bodies["/api/lists/subscribe"]["updateExistingUsersOnly"] is True
    assert bodies["/api/lists/unsubscribe"]["channelUnsubscribe"] is False
    assert all(set(s) == {"email"} for s in bodies["/api/lists/subscribe"]["subscribers"])


def test_stand_in_answers_in_the_spec_shapes(served: tuple[str, Any]) -> None:
    url, sandbox = served
    list_id = sandbox.create_list("Spec shapes")
    with httpx.Client(base_url=f"{url}/api", headers={"Api-Key": KEY}, timeout=5) as api:
        assert_matches("GetListsResponse", api.get("/lists").json())
        assert_matches("CreateListResponse", api.post("/lists", json={"name": "x"}).json())
        answer = api.post("/lists/subscribe", json={"listId": list_id, "subscribers": [{"email": "bad@"}]})
        assert answer.status_code == 200
        assert_matches("UserBulkUpdateListResponse", answer.json())
        assert answer.json()["failedUpdates"]["invalidEmails"] == ["bad@"]
        users = api.get("/lists/getUsers", params={"listId": list_id})
        assert users.headers["content-type"].startswith("text/plain") and users.text == ""


def test_member_failures_in_the_200_body_are_per_member_rejections(checked: Any) -> None:
    client, _, sandbox = checked
    list_id = sandbox.create_list("Failures")
    result = client.subscribe_to_list(
        list_id, [{"email": KNOWN[0]}, {"email": "not-an-address"}, {"userId": "nobody-knows-me"}]
    )
    assert result.failures[1].category is FailureCategory.INVALID
    assert result.failures[2].category is FailureCategory.NOT_FOUND
    assert 0 not in result.failures
    assert client.get_list_users(list_id) == [KNOWN[0]]
    removed = client.unsubscribe_from_list(list_id, [{"email": "stranger@example.com"}])
    assert removed.failures[0].category is FailureCategory.NOT_FOUND
    assert sandbox.stats()["users_created"].get("lists/unsubscribe", 0) == 0


def test_subscribe_creates_unknown_addresses_in_an_email_based_project(checked: Any) -> None:
    # The spec: updateExistingUsersOnly is "Only respected in API calls for userID-based and hybrid
    # projects"; the stand-in is email-based, so the flag does not protect an unknown address.
    client, _, sandbox = checked
    list_id = sandbox.create_list("Creates")
    client.subscribe_to_list(list_id, [{"email": "new-person@example.com"}])
    assert sandbox.stats()["users_created"]["lists/subscribe"] == 1


def test_membership_applies_asynchronously(checked: Any) -> None:
    client, _, sandbox = checked
    sandbox.set_options(profile_delay_seconds=60)
    list_id = sandbox.create_list("Later")
    assert client.subscribe_to_list(list_id, [{"email": KNOWN[0]}]).failures == {}
    assert client.get_list_users(list_id) == []  # accepted, not applied yet
    sandbox.flush()
    assert client.get_list_users(list_id) == [KNOWN[0]]


def test_unknown_list_is_a_permanent_error(checked: Any) -> None:
    client, _, _ = checked
    with pytest.raises(PermanentError) as caught:
        client.subscribe_to_list(999_999, [{"email": KNOWN[0]}])
    assert caught.value.endpoint == "lists/subscribe" and caught.value.status == 400


def test_an_answer_that_hides_members_fails_closed(checked: Any) -> None:
    client, _, sandbox = checked
    list_id = sandbox.create_list("Hidden")
    sandbox.set_faults(
        endpoint="lists/subscribe", fail_next=[{"status": 200, "body": {"successCount": 1, "failCount": 0}}]
    )
    result = client.subscribe_to_list(list_id, [{"email": KNOWN[0]}, {"email": KNOWN[1]}])
    assert {f.category for f in result.failures.values()} == {FailureCategory.RETRY}
    assert len(result.failures) == 2


def test_unreadable_member_list_is_retryable(checked: Any) -> None:
    client, _, sandbox = checked
    list_id = sandbox.create_list("Envelope")
    envelope = {"status": 200, "body": {"msg": "oops", "code": "GenericError"}}
    sandbox.set_faults(endpoint="lists/getUsers", fail_next=[envelope])
    with pytest.raises(RetryableError):
        client.get_list_users(list_id)


def test_list_reads_are_rate_limited_as_the_spec_says(served: tuple[str, Any]) -> None:
    url, sandbox = served
    list_id = sandbox.create_list("Limits")
    with httpx.Client(base_url=f"{url}/api", headers={"Api-Key": KEY}, timeout=5) as api:
        statuses = [api.get(f"/lists/{list_id}/size").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]


def test_list_writes_are_paced_at_the_configured_rate() -> None:
    rates = paced_rates(list_writes_per_second=2)
    assert (rates["lists/subscribe"].limit, rates["lists/subscribe"].seconds) == (2, 1.0)
    slow = paced_rates(list_writes_per_second=0.5)["lists/unsubscribe"]
    assert (slow.limit, slow.seconds) == (1, 2.0)
    assert paced_rates()["lists/getUsers"].limit == 5


@pytest.mark.parametrize("project_type", ["userId", "hybrid"])
def test_outside_email_projects_update_existing_users_only_keeps_unknown_people_out(
    checked: Any, project_type: str
) -> None:
    client, _, sandbox = checked
    sandbox.set_options(project_type=project_type)
    sandbox.seed_users([{"email": "known.id@example.com", "userId": "u-known"}])
    list_id = client.create_list("Panel", "")
    members = [{"userId": "u-known"}, {"userId": "u-stranger"}]

    kept_out = client.subscribe_to_list(list_id, members)
    assert kept_out.accepted_count == 1 and list(kept_out.failures) == [1]
    assert kept_out.failures[1].category is FailureCategory.NOT_FOUND
    assert sandbox.find(user_id="u-stranger") is None

    client.subscribe_to_list(list_id, members, update_existing_users_only=False)
    sandbox.flush()
    assert sandbox.find(user_id="u-stranger") is not None, "without the flag Iterable creates them"
