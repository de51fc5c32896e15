"""Bulk answers are pinned on items after normalising both sides; what cannot be pinned fails closed."""

from __future__ import annotations

from typing import Any

import pytest

from iterable_recipes.clients.iterable_bulk import read_bulk_result
from iterable_recipes.clients.iterable_models import (
    BulkUpdateUsersResponse,
    FailedUpdates,
    FailureCategory,
)
from iterable_recipes.identities import email_match_key


def read(items: list[dict[str, Any]], answer: dict[str, Any]) -> Any:
    parsed = BulkUpdateUsersResponse.model_validate(answer)
    return read_bulk_result(
        "users/bulkUpdate", items, parsed.fail_count, parsed.failed_updates, parsed
    ).fail_closed()


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("ada@bücher.example", "ada@xn--bcher-kva.example"),
        ("ada@xn--bcher-kva.example", "ada@bücher.example"),
        (" Ada@Example.com", "ada@example.com"),
        ("ada@EXAMPLE.com\u00a0", "ADA@example.COM"),
        ("ada@BÜCHER.example", "ada@XN--BCHER-KVA.example"),
    ],
)
def test_the_same_address_in_another_form_is_the_same_key(ours: str, theirs: str) -> None:
    assert email_match_key(ours) == email_match_key(theirs)


def test_a_domain_idna_refuses_still_has_a_key() -> None:
    # Labels IDNA cannot encode (empty, over 63 characters) fall back to the normalised form.
    assert email_match_key(" A@b..example") == "a@b..example"
    assert email_match_key("a@" + "x" * 64 + ".example") == "a@" + "x" * 64 + ".example"


def test_a_failure_named_in_punycode_is_pinned_on_the_unicode_item() -> None:
    items = [{"email": "ok@example.com"}, {"email": "ada@bücher.example"}]
    answer = {
        "successCount": 1,
        "failCount": 1,
        "failedUpdates": {"invalidEmails": ["ada@xn--bcher-kva.example"]},
    }
    result = read(items, answer)
    assert result.accepted_indexes() == [0]
    assert result.failures[1].category is FailureCategory.INVALID
    assert result.unattributed_failures == 0


@pytest.mark.parametrize(
    "failed",
    [
        {},  # failCount > 0, nobody named
        {"invalidEmails": ["someone.else@example.com"]},  # named, but not one of ours
        {"notFoundUserIds": ["ok@example.com"]},  # an email named where user ids go
    ],
    ids=["none-named", "stranger-named", "wrong-list"],
)
def test_failures_no_item_can_take_make_every_item_retryable(failed: dict[str, Any]) -> None:
    items = [{"email": "ok@example.com"}, {"email": "ada@example.com"}]
    result = read(items, {"successCount": 1, "failCount": 1, "failedUpdates": failed})
    assert result.accepted_indexes() == []
    assert all(f.category is FailureCategory.RETRY for f in result.failures.values())
    assert result.unattributed_failures == 1
    assert "@" not in result.failures[0].reason


def test_some_failures_pinned_and_some_not_still_fails_the_whole_request_closed() -> None:
    items = [{"email": "ok@example.com"}, {"email": "bad@example.com"}, {"email": "ada@example.com"}]
    answer = {"successCount": 1, "failCount": 2, "failedUpdates": {"invalidEmails": ["bad@example.com"]}}
    result = read(items, answer)
    assert result.accepted_indexes() == []
    assert {f.category for f in result.failures.values()} == {FailureCategory.RETRY}


def test_an_answer_whose_failures_are_all_pinned_is_read_item_by_item() -> None:
    items = [{"email": "ok@example.com"}, {"userId": "u-1"}]
    failed = FailedUpdates.model_validate({"notFoundUserIds": ["u-1"]})
    result = read_bulk_result("users/bulkUpdate", items, 1, failed, None).fail_closed()
    assert result.accepted_indexes() == [0]
    assert result.failures[1].category is FailureCategory.NOT_FOUND
    # User ids compare exactly: another case is another person.
    other = FailedUpdates.model_validate({"notFoundUserIds": ["U-1"]})
    closed = read_bulk_result("users/bulkUpdate", items, 1, other, None).fail_closed()
    assert closed.accepted_indexes() == []
