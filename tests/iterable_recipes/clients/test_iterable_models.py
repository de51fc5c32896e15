from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from iterable_recipes.clients.iterable_models import (
    BulkResult,
    BulkTrackResponse,
    BulkUpdateUsersRequest,
    BulkUser,
    FailureCategory,
    ItemFailure,
    TrackEventRequest,
    UpdateSubscriptionsRequest,
    UserResponse,
    event_id_from,
    item_identity,
)

VALID_ID = re.compile(r"[A-Za-z0-9-]{1,512}")


def test_requests_serialize_with_wire_names_and_without_none() -> None:
    user = BulkUser(email="a@example.com", data_fields={"plan": "free"}, prefer_user_id=False)
    assert user.to_wire() == {"email": "a@example.com", "dataFields": {"plan": "free"}, "preferUserId": False}
    body = BulkUpdateUsersRequest(users=[user], create_new_fields=True).to_wire()
    assert body["createNewFields"] is True
    assert "userId" not in body["users"][0]


def test_requests_accept_wire_names_too() -> None:
    event = TrackEventRequest.model_validate({"eventName": "signup", "userId": "u1", "createdAt": 1})
    assert event.event_name == "signup"
    assert event.to_wire() == {"eventName": "signup", "userId": "u1", "createdAt": 1}


def test_unknown_fields_are_refused_without_echoing_the_input() -> None:
    with pytest.raises(ValidationError) as info:
        BulkUser.model_validate({"email": "a@example.com", "dataFeilds": {}})
    assert "dataFeilds" in str(info.value)
    assert "a@example.com" not in str(info.value)


def test_bulk_user_has_no_per_item_create_new_fields() -> None:
    with pytest.raises(ValidationError):
        BulkUser.model_validate({"email": "a@example.com", "createNewFields": True})


def test_identity_is_required() -> None:
    with pytest.raises(ValidationError):
        UpdateSubscriptionsRequest(unsubscribed_channel_ids=[1])
    with pytest.raises(ValidationError):
        TrackEventRequest(event_name="x")


def test_model_repr_hides_email() -> None:
    assert "a@example.com" not in repr(BulkUser(email="a@example.com"))


@pytest.mark.parametrize("bad", ["has space", "under_score", "a" * 513, "", "é"])
def test_event_id_is_validated(bad: str) -> None:
    with pytest.raises(ValidationError):
        TrackEventRequest(event_name="x", user_id="u", id=bad)


def test_event_id_accepts_letters_digits_hyphens() -> None:
    assert TrackEventRequest(event_name="x", user_id="u", id="Ab-09").id == "Ab-09"


@given(source=st.text(min_size=1, max_size=40), source_id=st.text(min_size=1, max_size=1000))
def test_event_id_from_is_valid_and_stable(source: str, source_id: str) -> None:
    first = event_id_from(source, source_id)
    assert VALID_ID.fullmatch(first)
    assert len(first.encode()) <= 512
    assert event_id_from(source, source_id) == first


def test_event_id_from_keeps_readable_ids_and_separates_sources() -> None:
    assert event_id_from("customersdot", "123") == "customersdot-123"
    assert event_id_from("customersdot", "a/b") != event_id_from("customersdot", "a_b")
    assert event_id_from("a", "x") != event_id_from("b", "x")


def test_responses_tolerate_unknown_fields() -> None:
    answer = BulkTrackResponse.model_validate({"successCount": 1, "failCount": 0, "somethingNew": [1]})
    assert answer.success_count == 1
    assert UserResponse.model_validate({}).user is None


def test_bulk_result_extend_shifts_indexes() -> None:
    left = BulkResult("users/bulkUpdate", identities=["a", "b"])
    right = BulkResult("users/bulkUpdate", identities=["c", "d@example.com"])
    right.failures[1] = ItemFailure(1, FailureCategory.INVALID, "identifier is not valid", "d@example.com")
    merged = BulkResult.merge("users/bulkUpdate", [left, right])
    assert merged.size == 4
    assert list(merged.failures) == [3]
    assert merged.failures[3].identity == "d@example.com"
    assert merged.accepted_indexes() == [0, 1, 2]
    outcomes = list(merged.outcomes())
    assert [o.accepted for o in outcomes] == [True, True, True, False]
    assert "example.com" not in repr(merged.failures[3]) + repr(merged)


def test_item_identity_prefers_email() -> None:
    assert item_identity({"email": "a@example.com", "userId": "u"}) == "a@example.com"
    assert item_identity(BulkUser(user_id="u")) == "u"


def test_the_subscription_fields_are_the_five_arrays_bulk_update_can_write() -> None:
    from iterable_recipes.clients.iterable_models import SUBSCRIPTION_FIELDS

    assert {
        "emailListIds",
        "unsubscribedChannelIds",
        "unsubscribedMessageTypeIds",
        "subscribedMessageTypeIds",
        "userListIds",
    } == SUBSCRIPTION_FIELDS
