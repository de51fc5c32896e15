"""users/update and users/bulkUpdate: upsert, merge, userId rules, type clashes, and reading users back."""

from __future__ import annotations

import httpx
import pytest

from dev.standins.iterable import IterableSandbox
from tests.dev.standins.iterable.spec import assert_matches
from tests.dev.standins.iterable.users import known_user


def _bulk(api: httpx.Client, users: list[dict], **extra: object) -> httpx.Response:
    return api.post("/users/bulkUpdate", json={"users": users, **extra})


def test_bulk_update_creates_and_merges_top_level_fields(api: httpx.Client, sandbox: IterableSandbox) -> None:
    first = _bulk(api, [{"email": "Ann@Example.com", "dataFields": {"plan": "free", "seats": 1}}])
    assert first.status_code == 200
    assert_matches("UserBulkUpdateListResponse", first.json())
    assert first.json()["successCount"] == 1 and first.json()["failCount"] == 0
    assert sorted(first.json()["createdFields"]) == ["plan", "seats"]

    _bulk(api, [{"email": "ann@example.com", "dataFields": {"plan": "premium"}}])
    user = sandbox.user("ann@example.com")
    assert user is not None
    assert user["dataFields"] == {"plan": "premium", "seats": 1}
    stats = sandbox.stats()
    assert stats["profile_writes"] == {"ann@example.com": 2}
    assert stats["users_created"] == {"users/bulkUpdate": 1}


def test_merge_nested_objects(api: httpx.Client, sandbox: IterableSandbox) -> None:
    _bulk(api, [{"email": "n@example.com", "dataFields": {"prefs": {"mobile": True}}}])
    _bulk(
        api,
        [{"email": "n@example.com", "dataFields": {"prefs": {"email": True}}, "mergeNestedObjects": True}],
    )
    assert known_user(sandbox, "n@example.com")["dataFields"]["prefs"] == {"mobile": True, "email": True}
    _bulk(api, [{"email": "n@example.com", "dataFields": {"prefs": {"sms": False}}}])
    assert known_user(sandbox, "n@example.com")["dataFields"]["prefs"] == {"sms": False}


def test_invalid_emails_fail_per_item(api: httpx.Client, sandbox: IterableSandbox) -> None:
    response = _bulk(
        api, [{"email": "not-an-email", "dataFields": {}}, {"email": "ok@example.com", "dataFields": {}}]
    )
    body = response.json()
    assert response.status_code == 200
    assert body["successCount"] == 1 and body["failCount"] == 1
    assert body["failedUpdates"]["invalidEmails"] == ["not-an-email"]
    assert [user["email"] for user in sandbox.users()] == ["ok@example.com"]


def test_user_id_only_creates_nobody_unless_prefer_user_id(
    api: httpx.Client, sandbox: IterableSandbox
) -> None:
    sandbox.seed_users([{"email": "known@example.com", "userId": "u-1"}])
    response = _bulk(
        api,
        [
            {"userId": "u-1", "dataFields": {"plan": "free"}},
            {"userId": "u-404", "dataFields": {"plan": "free"}},
        ],
    )
    body = response.json()
    assert body["successCount"] == 1
    assert body["failedUpdates"]["notFoundUserIds"] == ["u-404"]
    assert known_user(sandbox, "known@example.com")["dataFields"] == {"plan": "free"}
    assert "users/bulkUpdate" not in sandbox.stats()["users_created"]

    created = _bulk(api, [{"userId": "u-new", "preferUserId": True, "dataFields": {}}])
    assert created.json()["successCount"] == 1
    placeholder = [user for user in sandbox.users() if user["userId"] == "u-new"]
    assert len(placeholder) == 1 and placeholder[0]["email"].endswith("@placeholder.email")

    single = api.post("/users/update", json={"userId": "u-405", "dataFields": {}})
    assert single.status_code == 400
    assert_matches("IterableApiResponse", single.json())


def test_type_mismatch_fails_the_whole_batch(api: httpx.Client, sandbox: IterableSandbox) -> None:
    _bulk(
        api,
        [{"email": "a@example.com", "dataFields": {"seats": 3, "trialEnds": "2024-01-31 00:00:00 +00:00"}}],
    )
    response = _bulk(
        api,
        [
            {"email": "b@example.com", "dataFields": {"seats": 5}},
            {"email": "c@example.com", "dataFields": {"seats": "many"}},
        ],
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "RequestFieldsTypesMismatched"
    assert_matches("IterableApiResponse", body)
    error = body["params"]["validationErrors"]["seats"]
    assert error["expectedType"] == "long" and "string" in error["incomingTypes"]
    assert error["offendingValue"] == "many"
    # Nothing of the batch was applied, not even the valid item.
    assert sandbox.user("b@example.com") is None

    date_clash = _bulk(api, [{"email": "a@example.com", "dataFields": {"trialEnds": "soon"}}])
    assert date_clash.json()["params"]["validationErrors"]["trialEnds"]["expectedType"] == "date"
    nested = _bulk(api, [{"email": "a@example.com", "dataFields": {"seats": 2.5}}])
    assert nested.status_code == 400


def test_single_update_success_and_mismatch(api: httpx.Client, sandbox: IterableSandbox) -> None:
    ok = api.post("/users/update", json={"email": "s@example.com", "dataFields": {"score": 1.5}})
    assert ok.status_code == 200 and ok.json()["code"] == "Success"
    assert_matches("IterableApiResponse", ok.json())
    clash = api.post("/users/update", json={"email": "s@example.com", "dataFields": {"score": True}})
    assert clash.status_code == 400 and clash.json()["code"] == "RequestFieldsTypesMismatched"
    invalid = api.post("/users/update", json={"email": "nope", "dataFields": {}})
    assert invalid.status_code == 400 and invalid.json()["code"] == "InvalidEmailAddressError"


def test_create_new_fields_false_filters_unknown_fields(api: httpx.Client, sandbox: IterableSandbox) -> None:
    _bulk(api, [{"email": "f@example.com", "dataFields": {"known": 1}}])
    response = _bulk(
        api, [{"email": "f@example.com", "dataFields": {"known": 2, "fresh": "x"}}], createNewFields=False
    )
    assert response.json()["filteredOutFields"] == ["fresh"]
    assert known_user(sandbox, "f@example.com")["dataFields"] == {"known": 2}


def test_get_user_unknown_is_empty_object_and_known_has_subscription_arrays(
    api: httpx.Client, sandbox: IterableSandbox
) -> None:
    unknown = api.get("/users/getByEmail", params={"email": "ghost@example.com"})
    assert unknown.status_code == 200 and unknown.json() == {}
    assert api.get("/users/byUserId", params={"userId": "ghost"}).json() == {}

    sandbox.seed_users(
        [
            {
                "email": "r@example.com",
                "userId": "r-1",
                "dataFields": {"plan": "free"},
                "unsubscribedChannelIds": [1],
            }
        ]
    )
    for response in (
        api.get("/users/getByEmail", params={"email": "r@example.com"}),
        api.get("/users/r%40example.com"),
        api.get("/users/byUserId", params={"userId": "r-1"}),
        api.get("/users/byUserId/r-1"),
    ):
        assert response.status_code == 200
        assert_matches("UserResponse", response.json())
        user = response.json()["user"]
        assert user["email"] == "r@example.com" and user["userId"] == "r-1"
        fields = user["dataFields"]
        assert fields["plan"] == "free"
        assert fields["unsubscribedChannelIds"] == [1]
        assert fields["subscribedMessageTypeIds"] == [] and fields["emailListIds"] == []
        assert "profileUpdatedAt" in user
    assert api.get("/users/getByEmail").status_code == 400


def test_thousand_user_bulk_update(api: httpx.Client, sandbox: IterableSandbox) -> None:
    users = [{"email": f"p{i}@example.com", "dataFields": {"n": i, "plan": "free"}} for i in range(1000)]
    response = _bulk(api, users)
    assert response.json()["successCount"] == 1000
    assert sandbox.stats()["users"] == 1000


def test_seeded_fields_join_the_schema(api: httpx.Client, sandbox: IterableSandbox) -> None:
    sandbox.seed_users([{"email": "seed@example.com", "dataFields": {"plan": "free"}}])
    response = _bulk(api, [{"email": "other@example.com", "dataFields": {"plan": 3}}])
    assert response.status_code == 400
    assert response.json()["params"]["validationErrors"]["plan"]["expectedType"] == "string"


def test_bulk_update_writes_the_subscription_arrays_the_spec_says_it_writes(
    api: httpx.Client, sandbox: IterableSandbox
) -> None:
    # api-docs.json, users/bulkUpdate: emailListIds is written; unsubscribedChannelIds and
    # unsubscribedMessageTypeIds are written only in projects without opt-in message types.
    sandbox.set_options(opt_in_message_types=False)
    sandbox.seed_users([{"email": "s@example.com", "emailListIds": [7], "subscribedMessageTypeIds": [101]}])
    fields = {"emailListIds": [9], "unsubscribedChannelIds": [1], "unsubscribedMessageTypeIds": [102]}
    response = _bulk(api, [{"email": "s@example.com", "dataFields": fields | {"plan": "free"}}])
    assert response.status_code == 200 and response.json()["filteredOutFields"] == []
    user = known_user(sandbox, "s@example.com")
    # Each array sent replaces the stored one, as on every subscription write.
    assert user["emailListIds"] == [9]
    assert user["unsubscribedChannelIds"] == [1] and user["unsubscribedMessageTypeIds"] == [102]
    assert user["dataFields"] == {"plan": "free"}


def test_bulk_update_in_a_project_with_opt_in_message_types(
    api: httpx.Client, sandbox: IterableSandbox
) -> None:
    sandbox.set_options(opt_in_message_types=True)  # the seeded catalogue has opt-in types
    sandbox.seed_users([{"email": "o@example.com", "unsubscribedChannelIds": [3]}])
    fields = {
        "emailListIds": [9],
        "unsubscribedChannelIds": [],
        "unsubscribedMessageTypeIds": [102],
        "subscribedMessageTypeIds": [101],
    }
    response = _bulk(api, [{"email": "o@example.com", "dataFields": fields}])
    assert response.status_code == 200
    user = known_user(sandbox, "o@example.com")
    assert user["emailListIds"] == [9]
    # The unsubscribed arrays cannot be written here: kept, and reported as filtered out.
    assert user["unsubscribedChannelIds"] == [3] and user["unsubscribedMessageTypeIds"] == []
    assert {"unsubscribedChannelIds", "unsubscribedMessageTypeIds"} <= set(
        response.json()["filteredOutFields"]
    )
    # Uncertain in the spec; the stand-in assumes the pessimistic reading (it is written).
    assert user["subscribedMessageTypeIds"] == [101]


def test_a_subscription_array_that_is_not_ids_is_bad_params(
    api: httpx.Client, sandbox: IterableSandbox
) -> None:
    response = _bulk(api, [{"email": "b@example.com", "dataFields": {"emailListIds": ["nine"]}}])
    assert response.status_code == 400 and response.json()["code"] == "BadParams"
    assert sandbox.users() == []


@pytest.mark.parametrize(
    ("project_type", "item", "created", "failure"),
    [
        # preferUserId is honoured only in email-based projects: false creates nobody there...
        ("email", {"userId": "u-1", "preferUserId": False}, 0, "notFoundUserIds"),
        # ... and is ignored elsewhere: an unknown userId is created.
        ("userId", {"userId": "u-1", "preferUserId": False}, 1, None),
        ("hybrid", {"userId": "u-1", "preferUserId": False}, 1, None),
        # An address alone identifies nobody in a userID-based project; a hybrid one creates them.
        ("userId", {"email": "new@example.com"}, 0, "notFoundEmails"),
        ("hybrid", {"email": "new@example.com"}, 1, None),
    ],
)
def test_each_project_type_identifies_and_creates_by_its_own_rules(
    api: httpx.Client,
    sandbox: IterableSandbox,
    project_type: str,
    item: dict,
    created: int,
    failure: str | None,
) -> None:
    sandbox.set_options(project_type=project_type)
    body = _bulk(api, [item | {"dataFields": {"plan": "free"}}]).json()
    assert sandbox.stats()["users"] == created
    if failure:
        assert body["failCount"] == 1 and body["failedUpdates"][failure], body
    else:
        assert body["successCount"] == 1, body
