"""The poll behind Marketo's webhook: queue unsubscribes into the inbox from a stored cursor per stream.

Two streams: type-9 activities (the unsubscribe link) and lead changes of ``unsubscribed`` (forms, the
Salesforce opt-out sync, durable unsubscribes, flow steps). Each stream's cursor moves only after the
page's items are committed, so a poll killed mid-page reads that page again and the inbox's keys drop
the repeats.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from iterable_recipes.clients.marketo import MarketoClient
from iterable_recipes.identities import normalise_email
from iterable_recipes.optouts.keys import email_change_item, poll_item
from iterable_recipes.store import Inbox

Stream = Literal["activities", "lead_changes"]
STREAMS: tuple[Stream, ...] = ("activities", "lead_changes")
CURSOR_NAMES: dict[Stream, str] = {"activities": "marketo.activities", "lead_changes": "marketo.lead_changes"}
FIRST_POLL_LOOKBACK = timedelta(days=1)
# The lead fields whose changes the poll reads: unsubscribes and re-subscriptions, and address changes
# (a suppressed lead's new address is suppressed too).
LEAD_CHANGE_FIELDS = ("unsubscribed", "email")


def poll_stream(
    client: MarketoClient,
    inbox: Inbox,
    stream: Stream,
    first_start: datetime | None = None,
    max_pages: int = 10_000,
) -> dict[str, int]:
    """Queue every unsubscribe of ``stream`` since its cursor; returns counts (pages, seen, queued, ...).

    ``first_start`` is where a stream without a cursor begins (default: a day ago).
    """
    cursor_name = CURSOR_NAMES[stream]
    counts = {
        "pages": 0,
        "unsubscribes": 0,
        "queued": 0,
        "already_waiting": 0,
        "resubscribed": 0,
        "unresolved": 0,
        "lifted": 0,
        "new_addresses": 0,
    }
    token = inbox.get_cursor(cursor_name)
    if token is None:
        token = client.get_paging_token(first_start or datetime.now(UTC) - FIRST_POLL_LOOKBACK)
        inbox.set_cursor(cursor_name, token)
    pages = (
        client.iter_activities(token)
        if stream == "activities"
        else client.iter_lead_changes(token, fields=LEAD_CHANGE_FIELDS)
    )
    for page in pages:
        counts["pages"] += 1
        for change in page.items:
            if change.sets_subscribed_again():
                # That lead's suppression only: another lead with the same address keeps it suppressed.
                # Nothing is written to Iterable; the person subscribes there through Iterable's own means.
                counts["lifted"] += inbox.ledger.lift(str(change.leadId))
            address = change.new_email()
            if address and normalise_email(address) and inbox.ledger.is_suppressed(str(change.leadId)):
                # The person asked not to be emailed, not the old address: the new one is suppressed too.
                inbox.add_many([email_change_item(change.key, change.leadId, address)])
                counts["new_addresses"] += 1
        unsubscribes = [a for a in page.items if a.sets_unsubscribed()]
        if unsubscribes:
            leads = {lead.id: lead for lead in client.get_leads_by_ids({a.leadId for a in unsubscribes})}
            items = []
            for activity in unsubscribes:
                lead = leads.get(activity.leadId)
                # An address of padding alone is no address: normalise before asking.
                email = normalise_email(lead.email) if lead is not None and lead.email else ""
                if lead is None or not email:
                    counts["unresolved"] += 1
                    record_unresolved(inbox, activity.leadId, activity.key, lead is None)
                    continue
                if lead.unsubscribed is False:
                    # Subscribed again since: opting them out now would undo their choice.
                    counts["resubscribed"] += 1
                    continue
                items.append(poll_item(activity.key, activity.leadId, email, stream))
            results = inbox.add_many(items)
            counts["unsubscribes"] += len(unsubscribes)
            counts["queued"] += sum(r.created for r in results)
            counts["already_waiting"] += sum(not r.created for r in results)
        # The page's items are committed: only now may the cursor pass them.
        inbox.set_cursor(cursor_name, page.next_page_token)
        if counts["pages"] >= max_pages:
            break
    return counts


def record_unresolved(inbox: Inbox, lead_id: int, activity_key: str, lead_missing: bool) -> None:
    """Audit an unsubscribe the poll cannot act on (no address, or the lead deleted or merged away),
    once per activity, before the cursor passes it: an unsubscribe never vanishes without a trace."""
    if any(activity_key in record.activity_ids for record in inbox.list_audit(lead_id)):
        return  # the same page read again after a poll was killed before its cursor moved
    reason = "the lead was not found (deleted or merged)" if lead_missing else "the lead has no email address"
    inbox.add_audit("poll", lead_id, [activity_key], "unresolved", {"reason": reason})
