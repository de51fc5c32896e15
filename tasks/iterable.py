"""Reusable Iterable tasks: upsert profiles, track events, look people up, opt people out.

Each goes through one bulk endpoint even for one item (DESIGN.md: mixing single and bulk calls for a
person reorders updates), retries only retryable errors, and returns positions and counts, never
emails. Inputs hold personal data, so nothing is cached or persisted from them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE

from iterable_recipes.clients.batching import batches, send_splitting
from iterable_recipes.clients.errors import ApiError, PermanentError, RetryableError, is_retryable
from iterable_recipes.clients.iterable import IterableClient
from iterable_recipes.clients.iterable_models import BulkResult, IterableUser
from iterable_recipes.clients.retry import TASK_RETRIES, TASK_RETRY_DELAYS, TASK_RETRY_JITTER_FACTOR
from iterable_recipes.masking import mask_emails
from iterable_recipes.optouts.consent import ConsentPolicy, load_consent_policy
from iterable_recipes.outcomes import ItemFailure, ItemsReport
from iterable_recipes.resources import iterable_client

LOOKUP_THREADS = 8  # getByEmail allows 100/s; at ~50 ms a call, 8 threads reach the limit


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


@lru_cache(maxsize=1)
def shared_client() -> IterableClient:
    """One client per process: one connection pool, one shared limiter."""
    return iterable_client()


def send_bulk(items: Sequence[Mapping[str, Any]], send: Any) -> ItemsReport:
    """Send ``items`` in bulk requests of at most 1000 items and 4 MB, splitting refused batches."""
    results = [send_splitting(chunk, send) for chunk in batches(items)]
    return ItemsReport.from_bulk(BulkResult.merge("bulk", results))


@task(name="upsert-users", **ITERABLE_TASK_OPTIONS)
def upsert_users(users: Sequence[Mapping[str, Any]], create_new_fields: bool | None = None) -> ItemsReport:
    """Create or update profiles through users/bulkUpdate (wire dicts: email or userId, dataFields)."""
    client = shared_client()
    return send_bulk(
        users, lambda chunk: client.bulk_update_users(chunk, create_new_fields=create_new_fields)
    )


@task(name="track-events", **ITERABLE_TASK_OPTIONS)
def track_events(events: Sequence[Mapping[str, Any]]) -> ItemsReport:
    """Track custom events through events/trackBulk; each event carries its stable ``id``."""
    client = shared_client()
    return send_bulk(events, client.track_events)


def _look_up(client: IterableClient, email: str) -> IterableUser | ApiError | None:
    try:
        return client.get_user_by_email(email)
    except ApiError as error:
        return error


def look_up_many(client: IterableClient, emails: Sequence[str]) -> list[IterableUser | ApiError | None]:
    """getByEmail for each address, a few at a time (the limiter keeps them within 100/s)."""
    with ThreadPoolExecutor(max_workers=LOOKUP_THREADS) as pool:
        return list(pool.map(lambda email: _look_up(client, email), emails))


@task(name="look-up-users", **ITERABLE_TASK_OPTIONS)
def look_up_users(emails: Sequence[str]) -> list[bool]:
    """Whether each person exists in Iterable (position by position); raises if a look-up failed."""
    found = look_up_many(shared_client(), emails)
    for answer in found:
        if isinstance(answer, ApiError):
            raise answer
    return [answer is not None for answer in found]


OptOutOutcome = Literal["opted_out", "not_in_iterable", "already_opted_out", "failed"]


@dataclass(frozen=True)
class OptOutDecision:
    """What happened to one person of an opt-out batch (by position), and Iterable's answer."""

    outcome: OptOutOutcome
    detail: str = ""
    retryable: bool = False


@lru_cache(maxsize=1)
def consent_policy() -> ConsentPolicy:
    """The consent policy, loaded once per process (a bad file fails the first task, saying why)."""
    return load_consent_policy()


def checked_policy(client: IterableClient) -> ConsentPolicy:
    """The consent policy after checking it against the project's own channels and message types."""
    policy = consent_policy()
    policy.check_against(client.get_channels(), client.get_message_types())
    return policy


def _failure(error: ApiError) -> OptOutDecision:
    return OptOutDecision("failed", mask_emails(str(error)), isinstance(error, RetryableError))


@task(name="opt-out", **ITERABLE_TASK_OPTIONS)
def opt_out(emails: Sequence[str], additive: bool = False) -> list[OptOutDecision]:
    """Opt people out of marketing email, only those Iterable already knows; one decision per position.

    Looks each person up first (every subscription write creates unknown users), skips people
    already opted out, and for the rest unsubscribes the marketing email channel and removes that
    channel's message types from their subscribed types in the same request (read-modify-write
    through bulkUpdateSubscriptions), or through the additive subscription endpoints when asked.
    """
    client = shared_client()
    policy = checked_policy(client)
    decisions: list[OptOutDecision | None] = [None] * len(emails)
    writes: list[tuple[int, dict[str, Any]]] = []
    for position, (email, found) in enumerate(zip(emails, look_up_many(client, emails), strict=True)):
        if isinstance(found, ApiError):
            decisions[position] = _failure(found)
        elif found is None:
            decisions[position] = OptOutDecision("not_in_iterable", "getByEmail answered {}")
        elif policy.is_opted_out(found.data_fields):
            decisions[position] = OptOutDecision("already_opted_out", "channel already unsubscribed")
        else:
            change = policy.optout_changes(found.data_fields)
            # Never true for an opt-out (it only removes types); the guard makes that a checked fact.
            policy.assert_may_subscribe(
                set(change.subscribed_message_type_ids)
                - set(found.data_fields.get("subscribedMessageTypeIds") or [])
            )
            writes.append(
                (
                    position,
                    {
                        "email": email,
                        "unsubscribedChannelIds": change.unsubscribed_channel_ids,
                        "subscribedMessageTypeIds": change.subscribed_message_type_ids,
                    },
                )
            )
    if additive:
        for position, request in writes:
            decisions[position] = _opt_out_additive(client, policy, request)
    elif writes:
        report = send_bulk([request for _, request in writes], client.bulk_update_subscriptions)
        for (position, _), index in zip(writes, range(report.sent), strict=True):
            failure = report.failures.get(index)
            decisions[position] = (
                OptOutDecision("opted_out", "bulkUpdateSubscriptions accepted")
                if failure is None
                else OptOutDecision("failed", failure.reason, failure.retryable)
            )
    return [d if d is not None else OptOutDecision("failed", "no decision") for d in decisions]


def _opt_out_additive(
    client: IterableClient, policy: ConsentPolicy, request: dict[str, Any]
) -> OptOutDecision:
    """Unsubscribe through DELETE /api/subscriptions: the channel's types first, then the channel."""
    email = request["email"]
    try:
        channel_types = {
            t.id for t in policy.message_types if t.channel_id in policy.opt_out.unsubscribe_channel_ids
        }
        for type_id in sorted(channel_types):
            client.unsubscribe("messageType", type_id, email=email)
        for channel_id in policy.opt_out.unsubscribe_channel_ids:
            client.unsubscribe("messageChannel", channel_id, email=email)
    except (RetryableError, PermanentError) as error:
        return _failure(error)
    return OptOutDecision("opted_out", "subscriptions endpoints accepted")


__all__ = [
    "ITERABLE_TASK_OPTIONS",
    "ItemFailure",
    "ItemsReport",
    "OptOutDecision",
    "look_up_users",
    "opt_out",
    "retry_only_retryable",
    "track_events",
    "upsert_users",
]
