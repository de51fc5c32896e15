"""Recipe 2: Marketo unsubscribes become Iterable opt-outs, only for people Iterable already knows.

Two flows. The poll (one run at a time: it owns the cursors) queues unsubscribes from Marketo's
activities and lead changes into the inbox, where the webhook also puts them, keyed per lead. The
opt-out drain (no concurrency limit: claims make concurrent drains safe) looks each person up,
skips people Iterable does not know and people already opted out, opts out the rest, and leaves an
audit record per decision.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from prefect import flow
from prefect.runtime import flow_run

from tasks.iterable import OptOutDecision
from tasks.marketo import SOURCE, decide_opt_outs, poll_unsubscribes, record_audit
from tasks.reporting import emit_alert, publish_counts
from tasks.store import Outcome, claim_items, record_outcomes

OPT_OUT_BATCH = 500


def _outcome(item_id: int, decision: OptOutDecision) -> Outcome:
    if decision.outcome == "opted_out":
        return Outcome(item_id, "delivered")
    if decision.outcome in ("not_in_iterable", "already_opted_out"):
        return Outcome(item_id, "skipped", decision.outcome.replace("_", " "))
    return Outcome(item_id, "retry" if decision.retryable else "dead", decision.detail)


@flow(name="marketo-opt-outs", description="Opt Marketo unsubscribes out of Iterable marketing email.")
def marketo_optout_drain(batch_size: int = OPT_OUT_BATCH, additive: bool | None = None) -> dict[str, int]:
    """Drain every due opt-out; returns counts (received, opted_out, not_in_iterable, ... , dead)."""
    from iterable_recipes.settings import get_settings

    use_additive = get_settings().iterable_optout_additive if additive is None else additive
    owner = f"marketo-opt-out-{flow_run.id or 'local'}"
    counts: Counter[str] = Counter()
    while items := claim_items(SOURCE, batch_size, owner):
        counts["received"] += len(items)
        emails = [str((item.payload or {}).get("email", "")) for item in items]
        decisions = decide_opt_outs(emails, use_additive)
        record_audit(items, decisions)
        counts.update(d.outcome for d in decisions)
        counts.update(
            record_outcomes(SOURCE, [_outcome(i.id, d) for i, d in zip(items, decisions, strict=True)], owner)
        )
    summary = {
        name: counts[name]
        for name in (
            "received",
            "opted_out",
            "not_in_iterable",
            "already_opted_out",
            "failed",
            "retry",
            "dead",
        )
    }
    publish_counts("marketo-opt-outs", summary, "Marketo unsubscribes opted out in Iterable")
    if counts["dead"]:
        emit_alert("marketo-opt-outs", "inbox.dead", {"dead": counts["dead"]})
    return summary


@flow(name="marketo-unsubscribe-poll", description="Poll Marketo for unsubscribes (the webhook's backstop).")
def marketo_poll(start: datetime | None = None, drain: bool = True) -> dict[str, int]:
    """Queue new unsubscribes from both streams, then drain the opt-outs when anything was queued."""
    counts: Counter[str] = Counter()
    for stream in ("activities", "lead_changes"):
        counts.update({f"{stream}_{k}": v for k, v in poll_unsubscribes(stream, start).items()})
    queued = counts["activities_queued"] + counts["lead_changes_queued"]
    summary = dict(counts) | {"queued": queued}
    publish_counts("marketo-unsubscribe-poll", summary, "Marketo unsubscribes queued for opt-out")
    if drain and queued:
        marketo_optout_drain()
    return summary
