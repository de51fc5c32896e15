"""The opt-out recipe's use of the consent ledger: move it after Iterable answered, and queue again the
people who may exist by now, so "not in Iterable" is never the last word on an unsubscribe."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from iterable_recipes.identities import normalise_email
from iterable_recipes.optouts.decisions import OptOutDecision
from iterable_recipes.optouts.keys import ledger_item
from iterable_recipes.store import Inbox, Item
from iterable_recipes.store.ledger import Suppression, SuppressionLedger

# Outcomes that show the opt-out in place: accepted by Iterable, or seen on the profile already.
APPLIED = ("opted_out", "already_opted_out")


def settle_ledger(
    ledger: SuppressionLedger, emails: Sequence[str], decisions: Sequence[OptOutDecision]
) -> None:
    """Applied for each person opted out (or already so); looked at again later for each person
    Iterable did not know; failures leave the ledger as it was (the inbox retries the item)."""
    normalised = [normalise_email(email) for email in emails]
    ledger.mark_applied(e for e, d in zip(normalised, decisions, strict=True) if d.outcome in APPLIED)
    ledger.check_later(
        e for e, d in zip(normalised, decisions, strict=True) if d.outcome == "not_in_iterable"
    )


def requeue_due(inbox: Inbox, window: timedelta, limit: int = 1000) -> int:
    """Queue an opt-out for each pending suppression whose next look is due; returns how many."""
    due = inbox.ledger.due(window, limit)
    return queue_optouts(inbox, due, "looked up again") if due else 0


def queue_optouts(inbox: Inbox, suppressions: Sequence[Suppression], why: str) -> int:
    """Queue an opt-out for each of ``suppressions`` (one open item per lead), then take them off the
    due list: the drain that takes the item sets their next look."""
    at = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    added = inbox.add_many([ledger_item(s, why, at) for s in suppressions])
    inbox.ledger.postpone(suppressions)
    return sum(1 for result in added if result.created)


def queue_for_written_people(inbox: Inbox, emails: Sequence[str], why: str) -> set[str]:
    """After the project itself wrote these people to Iterable: queue the opt-out of each one still
    suppressed; returns their addresses (normalised), whose custom events must wait for it."""
    subjects = inbox.ledger.subjects_of(normalise_email(email) for email in emails)
    if subjects:
        queue_optouts(inbox, [Suppression(email, lead, "ledger") for email, lead in subjects.items()], why)
    return set(subjects)


def lifted_items(inbox: Inbox, items: Sequence[Item]) -> set[int]:
    """The ids of ``items`` whose lead subscribed again in Marketo after asking: not to be opted out."""
    lifted = inbox.ledger.lifted_subjects(str((i.payload or {}).get("leadId", "")) for i in items)
    return {i.id for i in items if str((i.payload or {}).get("leadId", "")) in lifted}
