"""Marketo tasks: poll unsubscribes into the inbox from a stored cursor, and record opt-out audits.

The poll is the backstop behind Marketo's webhook. It reads two streams, type-9 activities (the
unsubscribe link) and lead changes of ``unsubscribed`` (forms, the Salesforce opt-out sync, durable
unsubscribes, flow steps), and moves each stream's cursor only after the page's items are committed,
so a poll killed mid-page reads that page again and the inbox's keys drop the repeats.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.marketo import MarketoCredentials
from iterable_recipes.clients.errors import ApiError
from iterable_recipes.clients.marketo import MarketoClient
from iterable_recipes.optouts.keys import SOURCE, poll_item
from iterable_recipes.settings import Settings, get_settings
from iterable_recipes.store.inbox import Item
from tasks.iterable import OptOutDecision, opt_out
from tasks.store import app_inbox

Stream = Literal["activities", "lead_changes"]
CURSOR_NAMES: dict[Stream, str] = {"activities": "marketo.activities", "lead_changes": "marketo.lead_changes"}
FIRST_POLL_LOOKBACK = timedelta(days=1)


def marketo_client(settings: Settings | None = None) -> MarketoClient:
    """A Marketo client from the configured block (it wins) or from MARKETO_* settings."""
    settings = settings or get_settings()
    if settings.marketo_credentials_block:
        block: Any = MarketoCredentials.load(settings.marketo_credentials_block, _sync=True)  # type: ignore[call-arg]
    else:
        block = MarketoCredentials.from_settings(settings)
    return block.get_client(
        calls_per_20s=settings.marketo_calls_per_20s, max_concurrent=settings.marketo_max_concurrent
    )


@task(name="poll-marketo-unsubscribes", cache_policy=NO_CACHE, persist_result=False)
def poll_unsubscribes(
    stream: Stream, start: datetime | None = None, max_pages: int = 10_000
) -> dict[str, int]:
    """Queue every unsubscribe of ``stream`` since its cursor; returns counts (pages, seen, queued)."""
    inbox = app_inbox()
    settings = get_settings()
    cursor_name = CURSOR_NAMES[stream]
    counts = {"pages": 0, "unsubscribes": 0, "queued": 0, "already_waiting": 0, "resubscribed": 0}
    with marketo_client(settings) as client:
        token = inbox.get_cursor(cursor_name)
        if token is None:
            since = start or settings.marketo_poll_start or datetime.now(UTC) - FIRST_POLL_LOOKBACK
            token = client.get_paging_token(since)
            inbox.set_cursor(cursor_name, token)
        pages = client.iter_activities(token) if stream == "activities" else client.iter_lead_changes(token)
        for page in pages:
            counts["pages"] += 1
            unsubscribes = [a for a in page.items if a.sets_unsubscribed()]
            if unsubscribes:
                leads = {lead.id: lead for lead in client.get_leads_by_ids({a.leadId for a in unsubscribes})}
                items = []
                for activity in unsubscribes:
                    lead = leads.get(activity.leadId)
                    if lead is None or not lead.email:
                        continue
                    if lead.unsubscribed is False:
                        # Subscribed again since: opting them out now would undo their choice.
                        counts["resubscribed"] += 1
                        continue
                    items.append(poll_item(activity.key, activity.leadId, lead.email, stream))
                results = inbox.add_many(items)
                counts["unsubscribes"] += len(unsubscribes)
                counts["queued"] += sum(r.created for r in results)
                counts["already_waiting"] += sum(not r.created for r in results)
            # The page's items are committed: only now may the cursor pass them.
            inbox.set_cursor(cursor_name, page.next_page_token)
            if counts["pages"] >= max_pages:
                break
    get_run_logger().info("marketo %s poll: %s", stream, counts)
    return counts


# The inbox retries what failed; task-level retries would only hold the leases longer.
_opt_out = opt_out.with_options(retries=0)


def decide_opt_outs(emails: Sequence[str], additive: bool) -> list[OptOutDecision]:
    """One decision per person; a whole batch refused (consent check, Iterable down) waits for later."""
    try:
        return _opt_out(emails, additive=additive)
    except ApiError as error:
        return [OptOutDecision("failed", str(error), True)] * len(emails)


@task(name="record-opt-out-audit", cache_policy=NO_CACHE, persist_result=False, retries=2)
def record_audit(items: Sequence[Item], decisions: Sequence[OptOutDecision]) -> int:
    """One audit record per decision: trigger, Marketo lead and activity ids, when, Iterable's answer."""
    inbox = app_inbox()
    for item, decision in zip(items, decisions, strict=True):
        payload = item.payload or {}
        inbox.add_audit(
            "webhook" if payload.get("trigger") == "webhook" else "poll",
            payload.get("leadId", ""),
            payload.get("activityIds", []),
            decision.outcome,
            {"detail": decision.detail, "retryable": decision.retryable},
        )
    return len(items)


__all__ = ["SOURCE", "decide_opt_outs", "poll_unsubscribes", "record_audit"]
