"""How a bulk answer's failures are pinned on the items sent: Iterable names them by email or userId.

Emails are compared by ``identities.email_match_key`` on both sides (Iterable may name an address in
another case or its domain in punycode); user ids compare exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from iterable_recipes.clients.iterable_models import (
    BulkItem,
    BulkResult,
    BulkTrackResponse,
    BulkUpdateUsersResponse,
    FailedUpdates,
    FailureCategory,
    ItemFailure,
    item_identity,
    plain,
)
from iterable_recipes.identities import email_match_key


def mark_failures(
    result: BulkResult, indexes: list[int], category: FailureCategory, reason: str, fail_count: int
) -> None:
    """Mark items Iterable named outside ``failedUpdates`` as failed (first reason wins); recount."""
    for index in indexes:
        if index not in result.failures:
            result.failures[index] = ItemFailure(index, category, reason, result.identities[index])
    result.unattributed_failures = max(0, fail_count - len(result.failures))


def item_ids(item: BulkItem) -> tuple[str | None, str | None]:
    """The email and userId of a request item, a model or its wire form."""
    item = plain(item)
    if isinstance(item, BaseModel):
        return getattr(item, "email", None), getattr(item, "user_id", None)
    return item.get("email"), item.get("userId")


# Iterable's failedUpdates lists, each with the category its items fall in.
_FAILURE_LISTS: tuple[tuple[str, str, FailureCategory, str], ...] = (
    ("invalid_emails", "invalid_user_ids", FailureCategory.INVALID, "identifier is not valid"),
    ("not_found_emails", "not_found_user_ids", FailureCategory.NOT_FOUND, "user not found"),
    ("forgotten_emails", "forgotten_user_ids", FailureCategory.FORGOTTEN, "user is GDPR-forgotten"),
    ("conflict_emails", "conflict_user_ids", FailureCategory.CONFLICT, "email/userId conflict"),
    ("invalid_data_emails", "invalid_data_user_ids", FailureCategory.INVALID_DATA, "dataFields refused"),
)


def read_bulk_result(
    name: str,
    items: Sequence[BulkItem],
    fail_count: int,
    failed: FailedUpdates,
    answer: BulkTrackResponse | BulkUpdateUsersResponse | None,
) -> BulkResult:
    """Attribute a bulk answer's ``failCount`` to its items through ``failedUpdates`` (and the
    deprecated top-level lists); what cannot be attributed is counted as unattributed.

    The caller may attribute more (``mark_failures``), then calls ``BulkResult.fail_closed``.
    """
    result = BulkResult(name, identities=[item_identity(i) for i in items])
    if answer is not None:
        result.filtered_out_fields = list(answer.filtered_out_fields)
        result.created_fields = list(answer.created_fields)
    if fail_count <= 0:
        return result
    by_email: dict[str, tuple[FailureCategory, str]] = {}
    by_user_id: dict[str, tuple[FailureCategory, str]] = {}
    lists = list(_FAILURE_LISTS)
    for email_list, id_list, category, reason in lists:
        for value in getattr(failed, email_list):
            by_email.setdefault(email_match_key(value), (category, reason))
        for value in getattr(failed, id_list):
            by_user_id.setdefault(value, (category, reason))
    if answer is not None:
        # The deprecated top-level lists still arrive from some endpoints.
        for value in answer.invalid_emails:
            by_email.setdefault(email_match_key(value), (FailureCategory.INVALID, "identifier is not valid"))
        for value in answer.invalid_user_ids:
            by_user_id.setdefault(value, (FailureCategory.INVALID, "identifier is not valid"))
    for index, item in enumerate(items):
        mail, uid = item_ids(item)
        hit = (by_email.get(email_match_key(mail)) if mail else None) or (
            by_user_id.get(uid) if uid else None
        )
        if hit is not None:
            result.failures[index] = ItemFailure(index, hit[0], hit[1], result.identities[index])
    result.unattributed_failures = max(0, fail_count - len(result.failures))
    return result
