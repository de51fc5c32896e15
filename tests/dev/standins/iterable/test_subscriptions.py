"""Subscription writes: overwrite semantics, channel alignment, additive endpoints, and who gets created."""

from __future__ import annotations

import httpx

from dev.standins.iterable import IterableSandbox
from tests.dev.standins.iterable.spec import assert_matches
from tests.dev.standins.iterable.users import known_user


def test_update_subscriptions_overwrites_only_arrays_sent(
    api: httpx.Client, sandbox: IterableSandbox
) -> None:
    sandbox.seed_users([{"email": "a@example.com", "emailListIds": [7], "unsubscribedMessageTypeIds": [102]}])
    response = api.post(
        "/users/updateSubscriptions", json={"email": "a@example.com", "unsubscribedChannelIds": [3]}
    )
    assert response.status_code == 200
    assert_matches("IterableApiResponse", response.json())
    user = known_user(sandbox, "a@example.com")
    assert user["unsubscribedChannelIds"] == [3]
    assert user["emailListIds"] == [7] and user["unsubscribedMessageTypeIds"] == [102]
    api.post("/users/updateSubscriptions", json={"email": "a@example.com", "emailListIds": []})
    assert known_user(sandbox, "a@example.com")["emailListIds"] == []
    assert sandbox.stats()["subscription_writes"] == {"a@example.com": 2}


def test_update_subscriptions_creates_unknown_users(api: httpx.Client, sandbox: IterableSandbox) -> None:
    api.post("/users/updateSubscriptions", json={"email": "new@example.com", "unsubscribedChannelIds": [1]})
    assert known_user(sandbox, "new@example.com")["unsubscribedChannelIds"] == [1]
    assert sandbox.stats()["users_created"] == {"users/updateSubscriptions": 1}


def test_channel_alignment_refuses_single_request(api: httpx.Client, sandbox: IterableSandbox) -> None:
    sandbox.seed_users([{"email": "a@example.com", "subscribedMessageTypeIds": [101]}])
    refused = api.post(
        "/users/updateSubscriptions", json={"email": "a@example.com", "unsubscribedChannelIds": [1]}
    )
    assert refused.status_code == 400
    assert_matches("IterableApiResponse", refused.json())
    assert known_user(sandbox, "a@example.com")["unsubscribedChannelIds"] == []

    # The opt-out the design prescribes: leave the channel and drop its types in the same request.
    opt_out = {"email": "a@example.com", "unsubscribedChannelIds": [1], "subscribedMessageTypeIds": []}
    assert api.post("/users/updateSubscriptions", json=opt_out).status_code == 200
    assert known_user(sandbox, "a@example.com")["unsubscribedChannelIds"] == [1]

    dormant = {"email": "b@example.com", "unsubscribedChannelIds": [1], "subscribedMessageTypeIds": [101]}
    assert (
        api.post("/users/updateSubscriptions", json=dormant | {"validateChannelAlignment": False}).status_code
        == 200
    )


def test_bulk_update_subscriptions_fails_misaligned_items_only(
    api: httpx.Client, sandbox: IterableSandbox
) -> None:
    sandbox.seed_users([{"email": "in@example.com", "userId": "in-1", "subscribedMessageTypeIds": [101]}])
    response = api.post(
        "/users/bulkUpdateSubscriptions",
        json={
            "updateSubscriptionsRequests": [
                {"email": "in@example.com", "unsubscribedChannelIds": [1]},
                {"userId": "in-1", "unsubscribedChannelIds": [1]},
                {"email": "out@example.com", "unsubscribedChannelIds": [1], "subscribedMessageTypeIds": []},
                {"email": "bad-address", "unsubscribedChannelIds": [1]},
            ]
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert_matches("BulkUpdateSubscriptionsResponse", body)
    assert body["successCount"] == 1 and body["failCount"] == 3
    assert body["validEmailFailures"] == ["in@example.com"]
    assert body["validUserIdFailures"] == ["in-1"]
    assert body["invalidEmails"] == ["bad-address"]
    assert known_user(sandbox, "in@example.com")["unsubscribedChannelIds"] == []
    assert sandbox.stats()["users_created"] == {"_sandbox/seed": 1, "users/bulkUpdateSubscriptions": 1}


def test_additive_endpoints_follow_policies_and_create_users(
    api: httpx.Client, sandbox: IterableSandbox
) -> None:
    assert api.patch("/subscriptions/messageType/101/user/a@example.com").status_code == 200
    assert known_user(sandbox, "a@example.com")["subscribedMessageTypeIds"] == [101]
    assert api.delete("/subscriptions/MESSAGETYPE/101/user/a@example.com").status_code == 200
    assert known_user(sandbox, "a@example.com")["subscribedMessageTypeIds"] == []
    api.delete("/subscriptions/messageType/102/user/a@example.com")
    assert known_user(sandbox, "a@example.com")["unsubscribedMessageTypeIds"] == [102]
    api.delete("/subscriptions/messagechannel/1/user/a@example.com")
    assert known_user(sandbox, "a@example.com")["unsubscribedChannelIds"] == [1]
    api.patch("/subscriptions/emailList/55/user/a@example.com")
    assert known_user(sandbox, "a@example.com")["emailListIds"] == [55]

    # An unsubscribe of a stranger creates the stranger: the pessimistic reading of Iterable's docs.
    api.delete("/subscriptions/messageChannel/1/user/stranger@example.com")
    created = sandbox.stats()["users_created"]
    assert created == {"subscriptions/subscribe": 1, "subscriptions/unsubscribe": 1}

    sandbox.seed_users([{"email": "byid@example.com", "userId": "id-9"}])
    assert api.patch("/subscriptions/messageType/301/byUserId/id-9").status_code == 200
    assert known_user(sandbox, "byid@example.com")["subscribedMessageTypeIds"] == [301]
    assert api.patch("/subscriptions/messageType/301/byUserId/unknown-id").status_code == 400


def test_additive_subscribe_under_left_channel_is_refused(
    api: httpx.Client, sandbox: IterableSandbox
) -> None:
    sandbox.seed_users([{"email": "a@example.com", "unsubscribedChannelIds": [1]}])
    response = api.patch("/subscriptions/messageType/101/user/a@example.com")
    assert response.status_code == 400
    assert known_user(sandbox, "a@example.com")["subscribedMessageTypeIds"] == []
    assert api.patch("/subscriptions/messageType/999/user/a@example.com").status_code == 400
    assert api.patch("/subscriptions/nonsense/1/user/a@example.com").status_code == 400


def test_bulk_subscription_action(api: httpx.Client, sandbox: IterableSandbox) -> None:
    sandbox.seed_users([{"email": "a@example.com", "userId": "a-1"}])
    response = api.put(
        "/subscriptions/messageChannel/1",
        params={"action": "unsubscribe"},
        json={"users": ["b@example.com", "broken"], "usersByUserId": ["a-1"]},
    )
    assert response.status_code == 202
    assert response.json()["params"]["successCount"] == 2
    assert response.json()["params"]["invalidEmails"] == ["broken"]
    assert known_user(sandbox, "a@example.com")["unsubscribedChannelIds"] == [1]
    assert known_user(sandbox, "b@example.com")["unsubscribedChannelIds"] == [1]
    assert sandbox.stats()["users_created"]["subscriptions/bulkUnsubscribe"] == 1
    bad_action = api.put("/subscriptions/messageChannel/1", params={"action": "toggle"}, json={"users": []})
    assert bad_action.status_code == 400


def test_bulk_update_subscriptions_keeps_omitted_arrays_and_dormant_types_without_alignment(
    api: httpx.Client, sandbox: IterableSandbox
) -> None:
    sandbox.seed_users(
        [
            {
                "email": "a@example.com",
                "subscribedMessageTypeIds": [101, 301],
                "unsubscribedMessageTypeIds": [102],
            }
        ]
    )
    only_channel = {"email": "a@example.com", "unsubscribedChannelIds": [1]}
    # validateChannelAlignment defaults to true (the spec): the stored 101 would sit under a left channel.
    refused = api.post("/users/bulkUpdateSubscriptions", json={"updateSubscriptionsRequests": [only_channel]})
    assert refused.json()["validEmailFailures"] == ["a@example.com"]
    request = only_channel | {"validateChannelAlignment": False}
    response = api.post("/users/bulkUpdateSubscriptions", json={"updateSubscriptionsRequests": [request]})
    assert response.json()["successCount"] == 1
    user = known_user(sandbox, "a@example.com")
    assert user["unsubscribedChannelIds"] == [1]
    assert user["subscribedMessageTypeIds"] == [101, 301] and user["unsubscribedMessageTypeIds"] == [102]


def test_additive_endpoints_answer_404_until_iterable_enables_them(
    api: httpx.Client, control: httpx.Client, sandbox: IterableSandbox
) -> None:
    sandbox.seed_users([{"email": "a@example.com", "subscribedMessageTypeIds": [101]}])
    assert control.post("/options", json={"additive_subscriptions_enabled": False}).status_code == 200
    assert control.get("/options").json()["additive_subscriptions_enabled"] is False
    answers = [
        api.delete("/subscriptions/messageChannel/1/user/a@example.com"),
        api.patch("/subscriptions/messageType/301/user/stranger@example.com"),
        api.put(
            "/subscriptions/messageChannel/1", params={"action": "unsubscribe"}, json={"users": ["x@y.io"]}
        ),
    ]
    assert [a.status_code for a in answers] == [404, 404, 404]
    assert_matches("IterableApiResponse", answers[0].json())
    assert known_user(sandbox, "a@example.com")["unsubscribedChannelIds"] == []
    assert sandbox.stats()["users_created"] == {"_sandbox/seed": 1}
    # bulkUpdateSubscriptions needs no enablement.
    request = {"email": "a@example.com", "unsubscribedChannelIds": [1], "validateChannelAlignment": False}
    assert (
        api.post("/users/bulkUpdateSubscriptions", json={"updateSubscriptionsRequests": [request]}).json()[
            "successCount"
        ]
        == 1
    )


def test_a_change_armed_for_after_a_look_up_lands_after_the_answer(
    api: httpx.Client, sandbox: IterableSandbox
) -> None:
    sandbox.seed_users([{"email": "a@example.com", "subscribedMessageTypeIds": [101, 301]}])
    sandbox.change_after_lookup("A@example.com", unsubscribedChannelIds=[3])
    answered = api.get("/users/getByEmail", params={"email": "a@example.com"}).json()["user"]["dataFields"]
    assert answered["unsubscribedChannelIds"] == []  # the look-up still shows the old arrays
    user = known_user(sandbox, "a@example.com")
    assert user["unsubscribedChannelIds"] == [3] and user["subscribedMessageTypeIds"] == [101, 301]
    assert sandbox.stats()["subscription_writes"] == {}  # the person's change, not an API write
    sandbox.seed_users([{"email": "a@example.com", "unsubscribedChannelIds": []}])
    api.get("/users/getByEmail", params={"email": "a@example.com"})
    assert known_user(sandbox, "a@example.com")["unsubscribedChannelIds"] == []  # applied once only
