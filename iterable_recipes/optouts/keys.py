"""How Marketo unsubscribes are keyed in the inbox: one waiting item per lead, whoever saw it first."""

from __future__ import annotations

from typing import Literal

from iterable_recipes.identities import normalise_email
from iterable_recipes.store.inbox import NewItem
from iterable_recipes.store.ledger import Suppression

SOURCE = "marketo"
KIND = "unsubscribe"
# The start of a ledger item's reason when the project itself has just written the person to Iterable.
WRITTEN_BY = "written to Iterable by "


def webhook_item(lead_id: str, email: str, unsubscribed_at: str) -> NewItem:
    """The item for one Marketo "Call Webhook" request; a repeat of the same request has the same id.

    The payload holds ``email`` normalised, as every item of this source does.
    """
    return NewItem(
        source=SOURCE,
        source_id=f"webhook-{lead_id}-{unsubscribed_at}",
        kind=KIND,
        payload={
            "email": normalise_email(email),
            "leadId": str(lead_id),
            "trigger": "webhook",
            "activityIds": [],
        },
        dedupe_key=str(lead_id),
        suppression=Suppression(normalise_email(email), str(lead_id), "webhook"),
    )


def poll_item(activity_key: str, lead_id: int | str, email: str, stream: str) -> NewItem:
    """The item for one unsubscribe the poll found; ``activity_key`` (the marketoGUID) is its identity.

    The payload holds ``email`` normalised: Marketo returns addresses as typed, padding included.
    """
    return NewItem(
        source=SOURCE,
        source_id=activity_key,
        kind=KIND,
        payload={
            "email": normalise_email(email),
            "leadId": str(lead_id),
            "trigger": "poll",
            "activityIds": [activity_key],
            "stream": stream,
        },
        dedupe_key=str(lead_id),
        suppression=Suppression(normalise_email(email), str(lead_id), "poll"),
    )


def ledger_item(suppression: Suppression, why: str, at: str, delay_seconds: float = 0.0) -> NewItem:
    """An opt-out queued again from the ledger (the person may exist now: ``why`` says what showed it;
    ``at`` makes the id new each time, while one open item per lead still holds through the dedupe key);
    not due for ``delay_seconds``."""
    return NewItem(
        source=SOURCE,
        source_id=f"ledger-{suppression.subject_id}-{at}",
        kind=KIND,
        payload={
            "email": suppression.email,
            "leadId": suppression.subject_id,
            "trigger": "ledger",
            "activityIds": [],
            "reason": why,
        },
        dedupe_key=suppression.subject_id,
        delay_seconds=delay_seconds,
    )


def queued_after_our_write(payload: dict[str, object] | None) -> bool:
    """Whether the item was queued because the project itself had just written the person to Iterable."""
    payload = payload or {}
    return payload.get("trigger") == "ledger" and str(payload.get("reason", "")).startswith(WRITTEN_BY)


def audit_trigger(payload: dict[str, object]) -> Literal["webhook", "poll", "ledger"]:
    """What queued the item, as the audit records it (items older than the ledger say webhook or poll)."""
    trigger = payload.get("trigger")
    if trigger in ("webhook", "ledger"):
        return trigger
    return "poll"


def email_change_item(activity_key: str, lead_id: int | str, new_email: str) -> NewItem:
    """The opt-out of the new address of a suppressed lead whose email changed (the suppression follows
    the person, so the new address is recorded in the ledger with the item)."""
    email = normalise_email(new_email)
    return NewItem(
        source=SOURCE,
        source_id=f"email-change-{activity_key}",
        kind=KIND,
        payload={"email": email, "leadId": str(lead_id), "trigger": "poll", "activityIds": [activity_key],
                 "stream": "lead_changes"},
        dedupe_key=str(lead_id),
        suppression=Suppression(email, str(lead_id), "poll"),
    )  # fmt: skip
