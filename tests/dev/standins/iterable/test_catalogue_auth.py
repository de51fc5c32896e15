"""API key, catalogue endpoints, unknown paths and malformed bodies."""

from __future__ import annotations

import httpx

from tests.dev.standins.iterable.spec import assert_matches


def test_missing_or_wrong_key_is_401_bad_api_key(api: httpx.Client) -> None:
    for headers in ({"Api-Key": ""}, {"Api-Key": "wrong"}):
        response = api.get("/channels", headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "BadApiKey"
        assert_matches("IterableApiResponse", response.json())
    bare = httpx.post(f"{api.base_url}/users/bulkUpdate", json={"users": []})
    assert bare.status_code == 401


def test_channels_and_message_types_are_seeded_in_spec_shape(api: httpx.Client) -> None:
    channels = api.get("/channels")
    assert channels.status_code == 200
    assert_matches("ChannelsResponse", channels.json())
    by_id = {item["id"]: item for item in channels.json()["channels"]}
    assert by_id[1] == {
        "id": 1,
        "name": "Marketing Email",
        "channelType": "Marketing",
        "messageMedium": "Email",
    }
    assert by_id[2]["channelType"] == "Transactional"
    assert by_id[3]["messageMedium"] == "SMS"

    types = api.get("/messageTypes")
    assert_matches("MessageTypesResponse", types.json())
    policies = {
        item["id"]: (item["name"], item["channelId"], item["subscriptionPolicy"])
        for item in types.json()["messageTypes"]
    }
    assert policies == {
        101: ("GitLab Marketing", 1, "OptIn"),
        102: ("Marketing Message", 1, "OptOut"),
        201: ("Receipts", 2, "OptOut"),
        301: ("SMS Promotions", 3, "OptIn"),
    }


def test_malformed_json_is_400_bad_json_body(api: httpx.Client) -> None:
    response = api.post(
        "/users/bulkUpdate", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "BadJsonBody"
    assert_matches("IterableApiResponse", response.json())


def test_structurally_wrong_body_is_400_bad_params(api: httpx.Client) -> None:
    response = api.post("/events/trackBulk", json={"events": [{"email": "a@example.com"}]})
    assert response.status_code == 400
    assert response.json()["code"] == "BadParams"


def test_unknown_api_path_is_404_envelope(api: httpx.Client) -> None:
    response = api.post("/users/delete", json={})
    assert response.status_code == 404
    assert response.json()["code"] == "NotFound"
