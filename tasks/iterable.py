"""Tasks that write to Iterable: upsert profiles, track events, opt people out, deliver a sync batch.

Each goes through one bulk endpoint even for one item (mixing single and bulk calls for a person
reorders updates), retries only retryable errors, and returns positions and counts, never emails.
Inputs hold personal data, so nothing is cached or persisted from them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from prefect import task
from prefect.cache_policies import NO_CACHE

from iterable_recipes.clients.batching import send_in_batches
from iterable_recipes.clients.errors import ApiError, is_retryable
from iterable_recipes.clients.iterable_models import BulkResult
from iterable_recipes.clients.retry import TASK_RETRIES, TASK_RETRY_DELAYS, TASK_RETRY_JITTER_FACTOR
from iterable_recipes.optouts.decisions import (
    OptOutDecision,
    checked_policy,
    opt_out_people,
    whole_batch_failed,
)
from iterable_recipes.optouts.reconcile import DriftReport, drift_report, reconcile
from iterable_recipes.resources import Resources
from iterable_recipes.sentences import error_text
from iterable_recipes.sync.definitions import IdentityKind, SyncDefinition, SyncKind
from iterable_recipes.sync.delivery import BatchReport, deliver_batch
from tasks import unwalked
from tasks.logs import how_many, run_logger
from tasks.store import consent_gate, suppression_check


def retry_only_retryable(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry a task only when it failed with a RetryableError."""
    try:
        state.result()
    except Exception as exc:  # the state re-raises what the task raised
        return is_retryable(exc)
    return False


ITERABLE_TASK_OPTIONS: dict[str, Any] = {
    "retries": TASK_RETRIES,
    "retry_delay_seconds": TASK_RETRY_DELAYS,
    "retry_jitter_factor": TASK_RETRY_JITTER_FACTOR,
    "retry_condition_fn": retry_only_retryable,
    "cache_policy": NO_CACHE,
    "persist_result": False,
}
# For steps whose items the inbox retries: task retries would only hold the leases longer.
INBOX_RETRIED: dict[str, Any] = ITERABLE_TASK_OPTIONS | {"retries": 0}


@task(name="upsert-users", **INBOX_RETRIED)
def upsert_users(resources: Resources, users: Sequence[dict[str, Any]]) -> BulkResult:
    """Create or update profiles through users/bulkUpdate (wire dicts: email or userId, dataFields)."""
    return send_in_batches(users, resources.iterable.bulk_update_users).without_identities()


@task(name="track-events", **INBOX_RETRIED)
def track_events(resources: Resources, events: Sequence[dict[str, Any]]) -> BulkResult:
    """Track custom events through events/trackBulk; each event carries its stable ``id``."""
    return send_in_batches(events, resources.iterable.track_events).without_identities()


def profile_sender(resources: Resources) -> Callable[[int, list[dict[str, Any]]], BulkResult]:
    """``upsert_users`` for ``resources``, called with its items unwalked (Prefect need not walk them),
    its task run named by what it holds ("bulkUpdate batch 12, 1000 users")."""

    def send(batch_no: int, users: list[dict[str, Any]]) -> BulkResult:
        named = upsert_users.with_options(
            task_run_name=f"bulkUpdate batch {batch_no}, {how_many(len(users), 'user')}"
        )
        return named(resources, unwalked(users))

    return send


def event_sender(resources: Resources) -> Callable[[int, list[dict[str, Any]]], BulkResult]:
    """``track_events`` for ``resources``, called with its items unwalked ("trackBulk batch 12, 998
    events")."""

    def send(batch_no: int, events: list[dict[str, Any]]) -> BulkResult:
        named = track_events.with_options(
            task_run_name=f"trackBulk batch {batch_no}, {how_many(len(events), 'event')}"
        )
        return named(resources, unwalked(events))

    return send


@task(name="opt-out", **INBOX_RETRIED)
def opt_out(resources: Resources, emails: Sequence[str], additive: bool) -> list[OptOutDecision]:
    """Opt people out of marketing email, only those Iterable already knows; one decision per position.

    The consent policy is checked against the project's channels first; a batch refused as a whole
    (that check, Iterable down) is a retryable failure for every person in it.
    """
    client = resources.iterable
    try:
        policy = checked_policy(client, resources.consent_policy)
        return opt_out_people(client, policy, emails, additive)
    except ApiError as error:
        run_logger().warning(
            "Iterable refused the whole opt-out batch (%s); its %d people are tried again later",
            error_text(error),
            len(emails),
        )
        return whole_batch_failed(error, len(emails))


@task(name="reconcile-consent", **ITERABLE_TASK_OPTIONS)
def reconcile_consent(resources: Resources, repair: bool) -> DriftReport:
    """Compare every active suppression with Iterable (getByEmail up to CONSENT_EXPORT_THRESHOLD, the
    user export above); with ``repair``, queue the opt-outs that are ours to redo. Returns masked rows."""
    result = reconcile(
        resources.inbox,
        resources.iterable,
        resources.consent_policy,
        threshold=resources.settings.consent_export_threshold,
        repair=repair,
    )
    return drift_report(result)


def opt_out_batch(
    resources: Resources, batch_no: int, emails: Sequence[str], additive: bool
) -> list[OptOutDecision]:
    """``opt_out``, its task run named by what it holds ("opt-out batch 3, 200 leads")."""
    named = opt_out.with_options(task_run_name=f"opt-out batch {batch_no}, {how_many(len(emails), 'lead')}")
    return named(resources, unwalked(emails), additive)


def sync_batch_name(defn: SyncDefinition, batch_no: int, batches: int, size: int) -> str:
    """A sync batch's task run name: "bulkUpdate batch 12 of 40, 1000 users" (shown 1-based)."""
    if defn.is_list:
        return f"list {defn.list_id} batch {batch_no + 1} of {batches}, {how_many(size, 'member')}"
    if defn.kind is SyncKind.CUSTOM_EVENTS:
        return f"trackBulk batch {batch_no + 1} of {batches}, {how_many(size, 'event')}"
    return f"bulkUpdate batch {batch_no + 1} of {batches}, {how_many(size, 'user')}"


def _sync_batch_run_name(parameters: dict[str, Any]) -> str:
    """``sync_batch_name`` from a ``deliver_sync_batch`` run's own parameters: one task serves every
    batch, where a task copied per batch (``with_options``) cost most of a millisecond of CPU each."""
    return sync_batch_name(
        parameters["defn"], parameters["batch_no"], parameters["batches"], len(parameters["items"])
    )


# cast: Prefect's protocol for a name callback carries a classmethod no plain function has.
@task(name="deliver-sync-batch", task_run_name=cast(Any, _sync_batch_run_name), **ITERABLE_TASK_OPTIONS)
def deliver_sync_batch(
    resources: Resources,
    defn: SyncDefinition,
    batch_no: int,
    items: Sequence[dict[str, Any]],
    batches: int = 0,
    verified: bool = False,
) -> BatchReport:
    """Send one sync batch (users/bulkUpdate or events/trackBulk, a list's subscribe and unsubscribe);
    unknown people are reported. A marketing list's members are checked against the consent ledger.
    ``verified``: the run checked its people exist before sending (update mode looks nobody up again).

    Logs one line: what Iterable answered, or why the batch as a whole was not accepted.
    """
    email = defn.identity.kind is IdentityKind.EMAIL
    # A list write changes membership only: it neither creates nor updates a profile to gate.
    consent = consent_gate(resources, f"sync {defn.name}") if email and not defn.is_list else None
    suppressed = suppression_check(resources) if defn.is_marketing_list else None
    try:
        project = resources.settings.iterable_project_type
        report = deliver_batch(
            resources.iterable, defn, batch_no, items, consent, suppressed, project, verified=verified
        )
    except ApiError as error:
        run_logger().warning(
            "Batch %d of %d, %d rows: not accepted (%s); %s",
            batch_no + 1,
            batches,
            len(items),
            error_text(error),
            "tried again in a while" if is_retryable(error) else "its rows are sent again by the next run",
        )
        raise
    run_logger().info(report.sentence(defn, batches))
    return report


def sync_batch_sender(
    resources: Resources, defn: SyncDefinition, batches: int, verified: bool = False
) -> Callable[[int, list[dict[str, Any]]], BatchReport]:
    """``deliver_sync_batch`` for ``resources`` and ``defn`` (``batches`` in the plan), called with its
    items unwalked, each task run named by its batch (``verified``: see ``deliver_sync_batch``)."""

    def send(batch_no: int, items: list[dict[str, Any]]) -> BatchReport:
        return deliver_sync_batch(resources, unwalked(defn), batch_no, unwalked(items), batches, verified)

    return send
