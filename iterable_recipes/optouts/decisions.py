"""Decide and apply each opt-out: look the person up, skip who Iterable does not know or already opted
out, unsubscribe the rest from marketing email; and what each decision means for the inbox and audit.

Every subscription-writing endpoint creates unknown users, so the look-up always comes first and an
unknown person is never written. An opt-out touches only the policy's channels (the marketing email
channel), never the person's message types: the unsubscribed channel blocks them all.

- Additive (``ITERABLE_OPTOUT_ADDITIVE``, for a project where Iterable enabled the subscription
  endpoints): ``DELETE /api/subscriptions/messageChannel/{id}/user/{email}``; no array is written,
  so nothing the person changes elsewhere can be undone.
- Fallback: ``bulkUpdateSubscriptions`` with only ``unsubscribedChannelIds`` (which it overwrites) and
  ``validateChannelAlignment: false``. The array is built from a read of a small group made straight
  before its write, and a write Iterable could not take is redone from a new read, never resent.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from iterable_recipes.clients.batching import send_in_batches
from iterable_recipes.clients.errors import ApiError, PermanentError, RetryableError
from iterable_recipes.clients.iterable import IterableClient
from iterable_recipes.clients.iterable_models import BulkResult, Encoded, IterableUser
from iterable_recipes.clients.lookups import look_up_many
from iterable_recipes.clients.retry import NO_RETRY, call_with_retries
from iterable_recipes.identities import normalise_email
from iterable_recipes.masking import mask_email, mask_emails
from iterable_recipes.optouts.consent import ConsentPolicy
from iterable_recipes.optouts.keys import queued_after_our_write
from iterable_recipes.sentences import counted, tally
from iterable_recipes.store import Item, Outcome

log = logging.getLogger(__name__)

OptOutOutcome = Literal["opted_out", "not_in_iterable", "already_opted_out", "failed"]

# An opt-out queued after our own write of the person is tried this many times while Iterable has not
# applied the write yet (CONSENT_WRITTEN_RETRY_SECONDS apart), then left to the ledger's backoff.
WRITTEN_TRIES = 6

# The fallback reads this many people, then writes them at once: a channel a person leaves between
# our read and our write is the one change it can undo, so the gap is kept to one group's look-ups.
READ_WRITE_GROUP = 50

NOT_ENABLED = (
    "Iterable answered 404 to DELETE /api/subscriptions/messageChannel/...: the additive subscription "
    "endpoints are not enabled for this project; ask Iterable to enable them, or set "
    "ITERABLE_OPTOUT_ADDITIVE=false"
)


@dataclass(frozen=True)
class OptOutDecision:
    """What happened to one person of an opt-out batch (by position), and Iterable's answer."""

    outcome: OptOutOutcome
    detail: str = ""
    retryable: bool = False


class _NotEnabled(Exception):
    """The project lacks Iterable's enablement of the additive subscription endpoints."""


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
    caller) is looked up and written as the same person. ``additive`` says whether Iterable enabled
    the additive subscription endpoints for the project.
    """
    emails = [normalise_email(email) for email in emails]
    if additive:
        return _opt_out_additive(client, policy, emails)
    decisions: list[OptOutDecision] = []
    for start in range(0, len(emails), READ_WRITE_GROUP):
        decisions.extend(_read_then_write(client, policy, emails[start : start + READ_WRITE_GROUP]))
    return decisions


def _settled_by_look_up(
    policy: ConsentPolicy, found: IterableUser | ApiError | None
) -> OptOutDecision | None:
    """The decision a look-up settles alone (an error, unknown, already out); None when a write is due."""
    if isinstance(found, ApiError):
        return _failure(found)
    if found is None:
        return OptOutDecision("not_in_iterable", "getByEmail answered {}")
    if policy.is_opted_out(found.data_fields):
        return OptOutDecision("already_opted_out", "channel already unsubscribed")
    return None


# ---- fallback: bulkUpdateSubscriptions, unsubscribedChannelIds only --------------------------------


def _read_then_write(
    client: IterableClient, policy: ConsentPolicy, emails: list[str]
) -> list[OptOutDecision]:
    """One group: read, then write at once; a write Iterable could not take is redone from a new read."""
    # The client would resend the same array on a 429 or 5xx, undoing a channel the person left in
    # the meantime; retrying the read and the write together builds the resent array afresh.
    return call_with_retries(lambda: _read_and_write(client, policy, emails), client.retry)


def _read_and_write(client: IterableClient, policy: ConsentPolicy, emails: list[str]) -> list[OptOutDecision]:
    """Look the group up, then send ``unsubscribedChannelIds`` for who still needs it, nothing between."""
    decisions: list[OptOutDecision | None] = []
    writes: list[tuple[int, dict[str, Any]]] = []
    for position, (email, found) in enumerate(zip(emails, look_up_many(client, emails), strict=True)):
        decision = _settled_by_look_up(policy, found)
        if decision is None and isinstance(found, IterableUser):
            writes.append((position, _channel_request(policy, email, found)))
        decisions.append(decision)
    if writes:
        result = send_in_batches([request for _, request in writes], _write_once(client))
        for index, (position, _) in enumerate(writes):
            decisions[position] = _written(result, index)
    return [d if d is not None else OptOutDecision("failed", "no decision") for d in decisions]


def _channel_request(policy: ConsentPolicy, email: str, found: IterableUser) -> dict[str, Any]:
    """The one UpdateSubscriptionsRequest of an opt-out: the channel array, to the address Iterable gave."""
    return {
        "email": found.email or email,
        "unsubscribedChannelIds": policy.optout_channel_ids(found.data_fields),
        # Without it Iterable refuses a profile whose subscribed types sit under the left channel;
        # with it those types stay as the person set them, dormant (spec: defaults to true).
        "validateChannelAlignment": False,
    }


def _write_once(client: IterableClient) -> Callable[[Sequence[Encoded]], BulkResult]:
    """bulkUpdateSubscriptions without the client's own resends (see ``_read_then_write``)."""

    def send(batch: Sequence[Encoded]) -> BulkResult:
        return client.bulk_update_subscriptions(batch, retry=NO_RETRY)

    return send


def _written(result: BulkResult, index: int) -> OptOutDecision:
    """The decision for item ``index`` of an accepted bulkUpdateSubscriptions."""
    failure = result.failures.get(index)
    if failure is None:
        return OptOutDecision("opted_out", "bulkUpdateSubscriptions accepted")
    return OptOutDecision("failed", mask_emails(failure.reason), failure.retryable)


# ---- additive: DELETE the channel, no array written ------------------------------------------------


def _opt_out_additive(
    client: IterableClient, policy: ConsentPolicy, emails: list[str]
) -> list[OptOutDecision]:
    """Look everyone up, then unsubscribe each known person from the policy's channels one by one."""
    decisions: list[OptOutDecision] = []
    try:
        for email, found in zip(emails, look_up_many(client, emails), strict=True):
            decision = _settled_by_look_up(policy, found)
            if decision is None and isinstance(found, IterableUser):
                decision = _unsubscribe_channels(client, policy, found.email or email)
            decisions.append(decision or OptOutDecision("failed", "no decision"))
    except _NotEnabled:
        # A setting that disagrees with the project: everyone waits until it is fixed, nobody is lost.
        log.error(NOT_ENABLED)
        return [OptOutDecision("failed", NOT_ENABLED, True)] * len(emails)
    return decisions


def _unsubscribe_channels(client: IterableClient, policy: ConsentPolicy, address: str) -> OptOutDecision:
    """DELETE each of the policy's channels for one person; 200 and 202 both mean accepted."""
    try:
        for channel_id in policy.opt_out.unsubscribe_channel_ids:
            client.unsubscribe("messageChannel", channel_id, email=address)
    except PermanentError as error:
        if error.status == 404:
            raise _NotEnabled from None
        return _failure(error)
    except RetryableError as error:
        return _failure(error)
    return OptOutDecision("opted_out", "subscriptions endpoint accepted")


def whole_batch_failed(error: ApiError, size: int) -> list[OptOutDecision]:
    """A batch refused as a whole (the consent check, Iterable down): every person waits for later."""
    return [OptOutDecision("failed", mask_emails(str(error)), True)] * size


def outcome_for(item_id: int, decision: OptOutDecision, unknown_retry: float | None = None) -> Outcome:
    """What the inbox records for the item behind ``decision``; ``unknown_retry`` (seconds) retries a
    person Iterable did not show instead of skipping them (see ``unknown_retry_for``)."""
    if decision.outcome == "opted_out":
        return Outcome(item_id, "delivered")
    if decision.outcome == "not_in_iterable" and unknown_retry is not None:
        reason = "Iterable has not applied our write of the person yet"
        return Outcome(item_id, "retry", reason, delay=unknown_retry)
    if decision.outcome in ("not_in_iterable", "already_opted_out"):
        return Outcome(item_id, "skipped", decision.outcome.replace("_", " "))
    return Outcome(item_id, "retry" if decision.retryable else "dead", decision.detail)


def decisions_sentence(batch_no: int, decisions: Sequence[OptOutDecision]) -> str:
    """One opt-out batch's log line: "Opt-out batch 3, 200 leads: 150 opted out, 30 not in Iterable
    (looked up again later), 15 already opted out, 5 failed (... ×5), tried again later"."""
    by_outcome = Counter(d.outcome for d in decisions)
    parts = [f"{by_outcome['opted_out']:,} opted out"]
    if by_outcome["not_in_iterable"]:
        parts.append(f"{by_outcome['not_in_iterable']:,} not in Iterable (looked up again later)")
    if by_outcome["already_opted_out"]:
        parts.append(f"{by_outcome['already_opted_out']:,} already opted out")
    failed = [d for d in decisions if d.outcome == "failed"]
    if failed:
        retried = sum(1 for d in failed if d.retryable)
        then = ", tried again later" if retried == len(failed) else f", {retried:,} of them tried again later"
        parts.append(f"{len(failed):,} failed ({tally(d.detail for d in failed)}){then}")
    return f"Opt-out batch {batch_no}, {counted(len(decisions), 'lead')}: " + ", ".join(parts) + "."


def unknown_retry_for(item: Item, seconds: float) -> float | None:
    """``seconds`` when an unknown person of ``item`` is worth another try soon: the item was queued
    right after our own write of them (they exist, Iterable has not applied it yet) and has tries
    left; None otherwise (the ledger's backoff, from a minute on, takes over)."""
    if queued_after_our_write(item.payload) and item.attempts < WRITTEN_TRIES:
        return seconds
    return None


ALREADY_OPTED_OUT = "already opted out"


def went_through(outcome: Outcome) -> bool:
    """An opt-out went through when it was written, or the person was opted out already."""
    return outcome.status == "delivered" or (
        outcome.status == "skipped" and outcome.reason == ALREADY_OPTED_OUT
    )


def describe_item(item: Item) -> tuple[str, str]:
    """An opt-out item for the run's per-record table: the masked person, and the Marketo lead with the
    inbox id."""
    payload = item.payload or {}
    email = item_email(item)
    return (
        mask_email(email) if email else "(no address)",
        f"lead {payload.get('leadId', '?')}, inbox {item.id}",
    )


def after_skip(item: Item) -> str:
    """What follows a skipped opt-out: a person Iterable did not know is looked up again by the ledger."""
    if (item.last_error or "").startswith("not in iterable"):
        return "looked up again by the consent ledger until the person exists (CONSENT_RECHECK_DAYS)"
    return "nothing: " + (item.last_error or "not to be written")


def item_email(item: Item) -> str:
    """The address an opt-out item is about (its payload's email)."""
    return str((item.payload or {}).get("email", ""))
