"""The opt-out recipe's use of the consent ledger: move it after Iterable answered, and queue again the
people who may exist by now, so "not in Iterable" is never the last word on an unsubscribe."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

from iterable_recipes.identities import normalise_email
from iterable_recipes.optouts.decisions import OptOutDecision
from iterable_recipes.optouts.keys import WRITTEN_BY, ledger_item
from iterable_recipes.store import Inbox, Item
from iterable_recipes.store.ledger import Suppression, SuppressionLedger

# Outcomes that show the opt-out in place: accepted by Iterable, or seen on the profile already.
APPLIED = ("opted_out", "already_opted_out")


def settle_ledger(
    ledger: SuppressionLedger,
    emails: Sequence[str],
    decisions: Sequence[OptOutDecision],
    retrying: Collection[str] = (),
) -> None:
    """Applied for each person opted out (or already so); looked at again later for each person
    Iterable did not know, except those in ``retrying`` (their item is tried again soon: the person
    was just written by us); failures leave the ledger as it was (the inbox retries the item)."""
    normalised = [normalise_email(email) for email in emails]
    soon = {normalise_email(email) for email in retrying}
    ledger.mark_applied(e for e, d in zip(normalised, decisions, strict=True) if d.outcome in APPLIED)
    ledger.check_later(
        e
        for e, d in zip(normalised, decisions, strict=True)
        if d.outcome == "not_in_iterable" and e not in soon
    )


def requeue_due(inbox: Inbox, window: timedelta, limit: int = 1000) -> int:
    """Queue an opt-out for each pending suppression whose next look is due; returns how many."""
    due = inbox.ledger.due(window, limit)
    return queue_optouts(inbox, due, "looked up again") if due else 0


def queue_optouts(
    inbox: Inbox, suppressions: Sequence[Suppression], why: str, delay_seconds: float = 0.0
) -> int:
    """Queue an opt-out for each of ``suppressions`` (one open item per lead, due after
    ``delay_seconds``), then take them off the due list: the drain that takes the item sets their next
    look. Returns how many items were new."""
    at = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    added = inbox.add_many([ledger_item(s, why, at, delay_seconds) for s in suppressions])
    inbox.ledger.postpone(suppressions)
    return sum(1 for result in added if result.created)


def queue_for_written_people(
    inbox: Inbox, emails: Sequence[str], by: str, apply_delay: float = 0.0
) -> tuple[set[str], int]:
    """After the project itself (``by``) wrote these people to Iterable: queue the opt-out of each one
    still suppressed, due after ``apply_delay`` (Iterable shows a write only once applied). Returns
    their addresses (normalised), whose custom events must wait for it, and how many items are new."""
    subjects = inbox.ledger.subjects_of(normalise_email(email) for email in emails)
    if not subjects:
        return set(), 0
    entries = [Suppression(email, lead, "ledger") for email, lead in subjects.items()]
    return set(subjects), queue_optouts(inbox, entries, f"{WRITTEN_BY}{by}", apply_delay)


def suppressed_addresses(ledger: SuppressionLedger, emails: Sequence[str]) -> set[str]:
    """The normalised addresses among ``emails`` under a suppression (pending or applied, not lifted):
    people a marketing list never takes."""
    return ledger.suppressed_among(normalise_email(email) for email in emails)


def lifted_items(inbox: Inbox, items: Sequence[Item]) -> set[int]:
    """The ids of ``items`` whose lead subscribed again in Marketo after asking: not to be opted out."""
    lifted = inbox.ledger.lifted_subjects(str((i.payload or {}).get("leadId", "")) for i in items)
    return {i.id for i in items if str((i.payload or {}).get("leadId", "")) in lifted}
