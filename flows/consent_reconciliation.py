"""Recipe 2's daily check: is every person who unsubscribed in Marketo unreachable by marketing email?

It reads every active suppression of the consent ledger, looks the people up in Iterable (getByEmail
for a small ledger, one user export for a large one), and reports each suppressed person still
reachable on the consent policy's marketing email channel: a table artifact (masked), counts, and a
``recipes.consent.drift`` event to alert on. With ``repair`` it queues the opt-outs that are ours to
redo (not applied yet, or the profile was re-created since); a person who subscribed again after our
opt-out is listed as "re-subscribed since" and never opted out again by this flow.
"""

from __future__ import annotations

from prefect import flow

from iterable_recipes.resources import run_resources
from tasks.checks import check_before_run
from tasks.iterable import reconcile_consent
from tasks.reporting import emit_alert, publish_counts, publish_table

RECIPE = "consent-reconciliation"
DRIFT_COUNTS = ("reachable", "not_applied", "recreated", "resubscribed", "repaired")


@flow(
    name="consent-reconciliation",
    description="Report (and with repair, fix) suppressed people reachable on Iterable marketing email.",
)
def consent_reconciliation(repair: bool = False) -> dict[str, int]:
    """One pass over the consent ledger; returns counts (checked, per verdict, reachable, repaired)."""
    with run_resources() as resources:
        check_before_run(resources, ["consent"])
        report = reconcile_consent(resources, repair)
        counts = report.counts
        if report.rows:
            publish_table(
                f"{RECIPE}-drift",
                report.rows,
                "Suppressed people reachable on Iterable marketing email (masked), why, what was done",
            )
        publish_counts(RECIPE, counts | {"lookup": report.lookup}, "Consent ledger compared with Iterable")
        if counts["reachable"]:
            emit_alert(RECIPE, "consent.drift", {name: counts[name] for name in DRIFT_COUNTS})
        return counts
