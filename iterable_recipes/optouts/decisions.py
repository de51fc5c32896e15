"""Decide and apply each opt-out: look the person up, skip who Iterable does not know or already opted
out, unsubscribe the rest from marketing email; and what each decision means for the inbox and audit.

Every subscription-writing endpoint creates unknown users, so the look-up always comes first and an
unknown person is never written. The opt-out unsubscribes the marketing email channel and removes that
channel's message types in the same request (bulkUpdateSubscriptions), or goes through the additive
subscription endpoints when the project has them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from iterable_recipes.clients.batching import send_in_batches
from iterable_recipes.clients.errors import ApiError, PermanentError, RetryableError
from iterable_recipes.clients.iterable import IterableClient
from iterable_recipes.clients.lookups import look_up_many
from iterable_recipes.identities import normalise_email
from iterable_recipes.masking import mask_emails
from iterable_recipes.optouts.consent import ConsentPolicy
from iterable_recipes.store import Item, Outcome

OptOutOutcome = Literal["opted_out", "not_in_iterable", "already_opted_out", "failed"]


@dataclass(frozen=True)
class OptOutDecision:
    """What happened to one person of an opt-out batch (by position), and Iterable's answer."""

    outcome: OptOutOutcome
    detail: str = ""
    retryable: bool = False


def _failure(error: ApiError) -> OptOutDecision:
    return OptOutDecision("failed", mask_emails(str(error)), isinstance(error, RetryableError))


def checked_policy(client: IterableClient, policy: ConsentPolicy) -> ConsentPolicy:
    """``policy`` after checking it against the project's own channels and message types."""
    policy.check_against(client.get_channels(), client.get_message_types())
    return policy


def opt_out_people(
    client: IterableClient, policy: ConsentPolicy, emails: Sequence[str], additive: bool
) -> list[OptOutDecision]:
    """Opt people out of marketing email, only those Iterable already knows; one decision per position.

    Each address is normalised first, so an item queued before keys were normalised (or by any other
    caller) is looked up and written as the same person.
    """
    emails = [normalise_email(email) for email in emails]
    decisions: list[OptOutDecision | None] = [None] * len(emails)
    writes: list[tuple[int, dict[str, Any]]] = []
    for position, (email, found) in enumerate(zip(emails, look_up_many(client, emails), strict=True)):
        if isinstance(found, ApiError):
            decisions[position] = _failure(found)
        elif found is None:
            decisions[position] = OptOutDecision("not_in_iterable", "getByEmail answered {}")
        elif policy.is_opted_out(found.data_fields):
            decisions[position] = OptOutDecision("already_opted_out", "channel already unsubscribed")
        else:
            change = policy.optout_changes(found.data_fields)
            # Never true for an opt-out (it only removes types); the guard makes that a checked fact.
            policy.assert_may_subscribe(
                set(change.subscribed_message_type_ids)
                - set(found.data_fields.get("subscribedMessageTypeIds") or [])
            )
            writes.append(
                (
                    position,
                    {
                        "email": email,
                        "unsubscribedChannelIds": change.unsubscribed_channel_ids,
                        "subscribedMessageTypeIds": change.subscribed_message_type_ids,
                    },
                )
            )
    if additive:
        for position, request in writes:
            decisions[position] = _opt_out_additive(client, policy, request["email"])
    elif writes:
        result = send_in_batches([request for _, request in writes], client.bulk_update_subscriptions)
        for index, (position, _) in enumerate(writes):
            failure = result.failures.get(index)
            decisions[position] = (
                OptOutDecision("opted_out", "bulkUpdateSubscriptions accepted")
                if failure is None
                else OptOutDecision("failed", mask_emails(failure.reason), failure.retryable)
            )
    return [d if d is not None else OptOutDecision("failed", "no decision") for d in decisions]


def _opt_out_additive(client: IterableClient, policy: ConsentPolicy, email: str) -> OptOutDecision:
    """Unsubscribe through DELETE /api/subscriptions: the channel's types first, then the channel."""
    try:
        channel_types = {
            t.id for t in policy.message_types if t.channel_id in policy.opt_out.unsubscribe_channel_ids
        }
        for type_id in sorted(channel_types):
            client.unsubscribe("messageType", type_id, email=email)
        for channel_id in policy.opt_out.unsubscribe_channel_ids:
            client.unsubscribe("messageChannel", channel_id, email=email)
    except (RetryableError, PermanentError) as error:
        return _failure(error)
    return OptOutDecision("opted_out", "subscriptions endpoints accepted")


def whole_batch_failed(error: ApiError, size: int) -> list[OptOutDecision]:
    """A batch refused as a whole (the consent check, Iterable down): every person waits for later."""
    return [OptOutDecision("failed", mask_emails(str(error)), True)] * size


def outcome_for(item_id: int, decision: OptOutDecision) -> Outcome:
    """What the inbox records for the item behind ``decision``."""
    if decision.outcome == "opted_out":
        return Outcome(item_id, "delivered")
    if decision.outcome in ("not_in_iterable", "already_opted_out"):
        return Outcome(item_id, "skipped", decision.outcome.replace("_", " "))
    return Outcome(item_id, "retry" if decision.retryable else "dead", decision.detail)


def item_email(item: Item) -> str:
    """The address an opt-out item is about (its payload's email)."""
    return str((item.payload or {}).get("email", ""))
