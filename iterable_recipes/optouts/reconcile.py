"""Consent reconciliation: every active suppression of the ledger compared with the person in Iterable.

A suppressed person who can still be reached on the marketing email channel is drift. Each one is
classified, with why when the ledger and the profile tell:

- not in Iterable: fine, the suppression stays pending (the opt-out drain looks again with backoff);
- unsubscribed from the policy's channels: fine, and a pending row becomes applied;
- reachable, pending: "opt-out not applied yet" (repair queues the opt-out);
- reachable, applied, ``signupDate`` after ``applied_at``: "profile re-created since the opt-out" (the
  profile our opt-out was written to is gone; repair makes the row pending again and queues the opt-out);
- reachable, applied otherwise: "re-subscribed since", the person's own choice in Iterable after our
  opt-out, which is reported and never repaired automatically.

People are looked up with getByEmail up to a threshold, and above it through one user export, so a
large ledger does not take the drains' getByEmail budget. No Prefect here: the flow reports the result.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from iterable_recipes.clients.errors import ApiError
from iterable_recipes.clients.iterable import IterableClient
from iterable_recipes.clients.iterable_models import IterableUser
from iterable_recipes.clients.lookups import look_up_many
from iterable_recipes.clients.retry import call_with_retries
from iterable_recipes.identities import normalise_email
from iterable_recipes.masking import mask_email
from iterable_recipes.optouts.consent import UNSUBSCRIBED_CHANNEL_IDS, ConsentPolicy
from iterable_recipes.optouts.ledger import queue_optouts
from iterable_recipes.store import Inbox
from iterable_recipes.store.ledger import ActiveSuppression, Suppression

Verdict = Literal["not_in_iterable", "opted_out", "lookup_failed", "not_applied", "recreated", "resubscribed"]
LookupPath = Literal["getByEmail", "export"]

# The verdicts that are drift (the person is reachable), and the "why" each is reported with.
WHY: dict[Verdict, str] = {
    "not_applied": "opt-out not applied yet",
    "recreated": "profile re-created since the opt-out",
    "resubscribed": "re-subscribed since",
}
REPAIRABLE: frozenset[Verdict] = frozenset({"not_applied", "recreated"})
VERDICTS: tuple[Verdict, ...] = (
    "not_in_iterable",
    "opted_out",
    "lookup_failed",
    "not_applied",
    "recreated",
    "resubscribed",
)
EXPORT_FIELDS = ("email", UNSUBSCRIBED_CHANNEL_IDS, "signupDate", "profileUpdatedAt")
REPORT_ROWS = 200  # an artifact of the first rows; the counts hold the rest
# Iterable's date format ("2024-01-31 12:00:00 +00:00"); ISO 8601 is read too.
ITERABLE_DATE = "%Y-%m-%d %H:%M:%S %z"


@dataclass(frozen=True)
class Profile:
    """What the reconciliation reads of one Iterable profile."""

    unsubscribed_channel_ids: frozenset[int]
    signup_date: datetime | None


@dataclass(frozen=True)
class Finding:
    """One active suppression, what its person looks like in Iterable, and what was done about it."""

    suppression: ActiveSuppression
    verdict: Verdict
    action: str = ""


@dataclass
class Reconciliation:
    """The result of one pass: how people were looked up, counts per verdict, the reachable ones."""

    lookup: LookupPath
    counts: Counter[str] = field(default_factory=Counter)
    reachable: list[Finding] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        """Counts only (no person): suppressions checked, per verdict, drift, repaired, marked applied."""
        names = ("checked", *VERDICTS, "reachable", "repaired", "marked_applied")
        return {name: int(self.counts[name]) for name in names}


# ---- reading profiles ----------------------------------------------------------------------------


def parse_iterable_date(value: Any) -> datetime | None:
    """A date as Iterable writes it (or ISO 8601), aware in UTC; None when absent or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    for parse in (lambda t: datetime.strptime(t, ITERABLE_DATE), datetime.fromisoformat):
        try:
            moment = parse(text)
        except ValueError:
            continue
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return None


def profile_of(fields: Mapping[str, Any]) -> Profile:
    """The profile's channels left and signup date, from getByEmail's dataFields or an export row."""
    channels = frozenset(int(v) for v in fields.get(UNSUBSCRIBED_CHANNEL_IDS) or [])
    return Profile(channels, parse_iterable_date(fields.get("signupDate")))


def _by_get_by_email(client: IterableClient, emails: Sequence[str]) -> dict[str, Profile | ApiError | None]:
    """getByEmail for each address (paced by the shared limiter)."""
    found = look_up_many(client, emails)
    return {
        email: profile_of(user.data_fields) if isinstance(user, IterableUser) else user
        for email, user in zip(emails, found, strict=True)
    }


def _export_once(client: IterableClient, wanted: set[str]) -> dict[str, Profile | ApiError | None]:
    """One whole export, keeping only the suppressed people; anyone not in it is not in Iterable."""
    profiles: dict[str, Profile | ApiError | None] = dict.fromkeys(wanted)
    for row in client.export_users(EXPORT_FIELDS):
        email = normalise_email(str(row.get("email") or ""))
        if email in wanted:
            profiles[email] = profile_of(row)
    return profiles


def look_up_profiles(
    client: IterableClient, emails: Sequence[str], threshold: int
) -> tuple[LookupPath, dict[str, Profile | ApiError | None]]:
    """Each address's profile (None: not in Iterable; an ApiError: the look-up failed), and the path."""
    if len(emails) <= threshold:
        return "getByEmail", _by_get_by_email(client, emails)
    # A stream broken midway is started again whole: a half-read export would call people unknown.
    return "export", call_with_retries(lambda: _export_once(client, set(emails)), client.retry)


# ---- classifying and repairing -------------------------------------------------------------------


def classify(
    suppression: ActiveSuppression, found: Profile | ApiError | None, channels: frozenset[int]
) -> Verdict:
    """What one suppression's person looks like in Iterable (see the module's docstring)."""
    if isinstance(found, ApiError):
        return "lookup_failed"
    if found is None:
        return "not_in_iterable"
    if channels <= found.unsubscribed_channel_ids:
        return "opted_out"
    if suppression.status != "applied":
        return "not_applied"
    applied, signed_up = suppression.applied_at, found.signup_date
    if applied is not None and signed_up is not None and signed_up > applied:
        return "recreated"
    return "resubscribed"


def _action(verdict: Verdict, repair: bool) -> str:
    """What the pass does about one reachable person."""
    if verdict not in REPAIRABLE:
        return "none: never repaired automatically"
    return "opt-out queued" if repair else "none: run with repair to queue the opt-out"


def _repair(inbox: Inbox, findings: Sequence[Finding]) -> int:
    """Queue the opt-out of each repairable finding; a re-created profile's row is pending again first."""
    recreated = [_entry(f) for f in findings if f.verdict == "recreated"]
    inbox.ledger.reopen(recreated)
    due = [_entry(f) for f in findings if f.verdict in REPAIRABLE]
    if due:
        queue_optouts(inbox, due, "consent reconciliation: reachable on marketing email")
    return len(due)


def _entry(finding: Finding) -> Suppression:
    row = finding.suppression
    return Suppression(row.email, row.subject_id, "ledger")


def _newly_applied(finding: Finding) -> bool:
    """A pending row whose person Iterable shows opted out already."""
    return finding.verdict == "opted_out" and finding.suppression.status == "pending"


def reconcile(
    inbox: Inbox, client: IterableClient, policy: ConsentPolicy, *, threshold: int, repair: bool
) -> Reconciliation:
    """Compare every active suppression with Iterable; with ``repair``, queue the repairable opt-outs."""
    active = inbox.ledger.active()
    emails = sorted({row.email for row in active})
    lookup, profiles = look_up_profiles(client, emails, threshold)
    channels = frozenset(policy.opt_out.unsubscribe_channel_ids)
    result = Reconciliation(lookup)
    result.counts["checked"] = len(active)
    findings = [Finding(row, classify(row, profiles.get(row.email), channels)) for row in active]
    result.counts.update(f.verdict for f in findings)
    # Seen unsubscribed in Iterable: the opt-out is in place, whoever put it there.
    opted_out = [f.suppression.email for f in findings if _newly_applied(f)]
    result.counts["marked_applied"] = inbox.ledger.mark_applied(opted_out)
    reachable = [
        Finding(f.suppression, f.verdict, _action(f.verdict, repair)) for f in findings if f.verdict in WHY
    ]
    result.reachable = reachable
    result.counts["reachable"] = len(reachable)
    if repair:
        result.counts["repaired"] = _repair(inbox, reachable)
    return result


# ---- reporting -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftReport:
    """What the flow publishes: the look-up path, counts, the masked drift table. No raw address."""

    lookup: LookupPath
    counts: dict[str, int]
    rows: list[dict[str, str]]


def drift_report(result: Reconciliation, limit: int = REPORT_ROWS) -> DriftReport:
    """The publishable form of ``result``."""
    return DriftReport(result.lookup, result.summary(), report_rows(result.reachable, limit))


def report_rows(findings: Sequence[Finding], limit: int = REPORT_ROWS) -> list[dict[str, str]]:
    """The drift table: masked identity, lead id, ledger status, why, action; capped with a "more" row."""
    rows = [
        {
            "person": mask_email(f.suppression.email),
            "lead_id": f.suppression.subject_id,
            "status": f.suppression.status,
            "why": WHY[f.verdict],
            "action": f.action,
        }
        for f in findings[:limit]
    ]
    if len(findings) > limit:
        more = f"… {len(findings) - limit} more"
        rows.append({"person": more, "lead_id": "", "status": "", "why": "", "action": ""})
    return rows
