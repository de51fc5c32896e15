from __future__ import annotations

from typing import Any

import httpx
import pytest

from iterable_recipes.clients.iterable import IterableClient
from iterable_recipes.clients.iterable_models import (
    BulkUser,
    TrackEventRequest,
    UpdateSubscriptionsRequest,
    event_id_from,
)
from iterable_recipes.clients.retry import NO_RETRY
from tests.contract.iterable_spec import (
    SpecCheckingTransport,
    SpecViolation,
    find_operation,
    spec_errors,
    validate_iterable_request,
)

EMAIL = "ada@example.com"

ANSWERS: dict[str, Any] = {
    "/api/events/trackBulk": {"successCount": 1, "failCount": 0},
    "/api/users/bulkUpdate": {"successCount": 1, "failCount": 0},
    "/api/users/bulkUpdateSubscriptions": {
        "successCount": 1,
        "failCount": 0,
        "invalidEmails": [],
        "invalidUserIds": [],
        "validEmailFailures": [],
        "validUserIdFailures": [],
    },
    "/api/users/getByEmail": {"user": {"email": EMAIL, "dataFields": {}}},
    "/api/users/byUserId": {"user": {"email": EMAIL, "userId": "u1", "dataFields": {}}},
    "/api/channels": {"channels": []},
    "/api/messageTypes": {"messageTypes": []},
}


def answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, json=ANSWERS.get(request.url.path, {"msg": "", "code": "Success", "params": {}})
    )


@pytest.fixture
def checked() -> tuple[IterableClient, SpecCheckingTransport]:
    transport = SpecCheckingTransport(httpx.MockTransport(answer))
    return IterableClient("k", transport=transport, retry=NO_RETRY), transport


def test_every_client_method_conforms(checked: tuple[IterableClient, SpecCheckingTransport]) -> None:
    client, transport = checked
    event = TrackEventRequest(
        event_name="saasTrialStarted",
        email=EMAIL,
        id=event_id_from("customersdot", "evt-1"),
        created_at=1_700_000_000,
        data_fields={"plan": "ultimate", "nested": {"a": 1}},
        campaign_id=1,
        template_id=2,
        create_new_fields=True,
    )
    with client:
        client.track_events([event, {"eventName": "x", "userId": "u1", "id": "abc-1"}])
        client.bulk_update_users(
            [
                BulkUser(
                    user_id="u1", data_fields={"a": 1}, prefer_user_id=False, merge_nested_objects=False
                ),
                {"email": EMAIL, "dataFields": {"b": [1, 2]}},
            ],
            create_new_fields=True,
        )
        subs = UpdateSubscriptionsRequest(
            email=EMAIL,
            email_list_ids=[1],
            unsubscribed_channel_ids=[2],
            unsubscribed_message_type_ids=[3],
            subscribed_message_type_ids=[],
            campaign_id=4,
            template_id=5,
            validate_channel_alignment=True,
        )
        client.bulk_update_subscriptions([subs, {"userId": "u1", "unsubscribedChannelIds": [1]}])
        client.get_user_by_email(EMAIL)
        client.get_user_by_user_id("u1")
        client.unsubscribe("messageChannel", 1, email=EMAIL)
        client.unsubscribe("messageType", 102, user_id="u/1")
        client.bulk_subscription("messageChannel", 1, "unsubscribe", emails=[EMAIL], user_ids=["u1"])
        client.get_channels()
        client.get_message_types()
    assert transport.violations == []
    templates = {template for _, template in transport.checked}
    assert len(transport.checked) == 10
    assert templates == {
        "/api/events/trackBulk",
        "/api/users/bulkUpdate",
        "/api/users/bulkUpdateSubscriptions",
        "/api/users/getByEmail",
        "/api/users/byUserId",
        "/api/channels",
        "/api/messageTypes",
        "/api/subscriptions/{subscriptionGroup}/{subscriptionGroupId}/user/{userEmail}",
        "/api/subscriptions/{subscriptionGroup}/{subscriptionGroupId}/byUserId/{userId}",
        "/api/subscriptions/{subscriptionGroup}/{subscriptionGroupId}",
    }


LIST_ANSWERS: dict[str, httpx.Response] = {
    "/api/lists": httpx.Response(
        200, json={"lists": [{"id": 7, "name": "x", "createdAt": 1, "listType": "Standard"}]}
    ),
    "/api/lists/subscribe": httpx.Response(200, json={"successCount": 2, "failCount": 0}),
    "/api/lists/unsubscribe": httpx.Response(200, json={"successCount": 1, "failCount": 0}),
    "/api/lists/getUsers": httpx.Response(200, text=f"{EMAIL}\n"),
    "/api/lists/7/size": httpx.Response(200, text="1"),
}


def test_list_methods_conform() -> None:
    def lists(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/api/lists":
            return httpx.Response(200, json={"listId": 7})
        return LIST_ANSWERS[request.url.path]

    transport = SpecCheckingTransport(httpx.MockTransport(lists))
    with IterableClient("k", transport=transport, retry=NO_RETRY) as client:
        assert client.create_list("x", "y") == 7
        assert [item.id for item in client.get_lists()] == [7]
        assert client.subscribe_to_list(7, [{"email": EMAIL}, {"userId": "u1"}]).failures == {}
        assert client.unsubscribe_from_list(7, [{"email": EMAIL}]).failures == {}
        assert client.get_list_users(7, prefer_user_id=True) == [EMAIL]
        assert client.get_list_size(7) == 1
    assert transport.violations == []
    assert {template for _, template in transport.checked} == {
        "/api/lists",
        "/api/lists/subscribe",
        "/api/lists/unsubscribe",
        "/api/lists/getUsers",
        "/api/lists/{listId}/size",
    }


def test_a_misspelt_field_fails(checked: tuple[IterableClient, SpecCheckingTransport]) -> None:
    client, transport = checked
    with client, pytest.raises(SpecViolation, match="dataFeilds"):
        client.bulk_update_users([{"email": EMAIL, "dataFeilds": {"a": 1}}])
    assert len(transport.violations) == 1
    assert transport.checked == []


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/api/events/track", {"email": EMAIL}, "'eventName' is a required property"),
        ("/api/events/track", {"eventName": "x", "eventname": "y"}, "eventname"),
        ("/api/events/trackBulk", {"events": [{"eventName": "x", "dataField": {}}]}, "events/0"),
        ("/api/users/bulkUpdate", {"users": [{"email": EMAIL}], "createNewFields": "yes"}, "createNewFields"),
        ("/api/users/bulkUpdate", {"users": [{"email": EMAIL, "createNewFields": True}]}, "users/0"),
        (
            "/api/lists/subscribe",
            {"listId": 1, "subscribers": [], "updateExistingUserOnly": True},
            "UserOnly",
        ),
        ("/api/lists/unsubscribe", {"listId": 1, "subscribers": [{"mail": EMAIL}]}, "subscribers/0"),
        (
            "/api/users/updateSubscriptions",
            {"email": EMAIL, "unsubscribedChannelIds": ["1"]},
            "unsubscribedChannelIds/0",
        ),
        ("/api/users/bulkUpdateSubscriptions", {"requests": []}, "updateSubscriptionsRequests"),
    ],
)
def test_validator_catches_bad_bodies(path: str, body: Any, fragment: str) -> None:
    errors = spec_errors("POST", path, body)
    assert errors
    assert any(fragment in e for e in errors)


def test_free_form_objects_stay_open() -> None:
    validate_iterable_request(
        "POST", "/api/users/update", {"email": EMAIL, "dataFields": {"anything": {"x": 1}}}
    )


def test_path_and_query_parameters_are_checked() -> None:
    assert spec_errors("PUT", "/api/subscriptions/messageType/abc", {"users": []}, {"action": "subscribe"})
    assert spec_errors("PUT", "/api/subscriptions/messageType/1", {"users": []}) == [
        "query parameter action is required"
    ]
    assert spec_errors("GET", "/api/users/getByEmail", None, {"mail": EMAIL}) == [
        "unknown query parameter mail"
    ]
    assert spec_errors("GET", "/api/channels", {"x": 1}) == ["this operation takes no body"]
    with pytest.raises(SpecViolation):
        find_operation("POST", "/api/users/delete")


def test_literal_paths_win_over_templates() -> None:
    assert find_operation("GET", "/api/users/byUserId")[0] == "/api/users/byUserId"
    assert find_operation("GET", "/api/users/a%40b.com")[0] == "/api/users/{email}"
