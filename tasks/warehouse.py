"""Snowflake sync tasks: plan the change set in the warehouse, deliver batches to Iterable, record runs.

Inputs hold personal data (the batch items), so nothing is cached or persisted from them; results are
positions, counts and masked reasons.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prefect import task

from iterable_recipes.masking import mask_emails
from iterable_recipes.settings import get_settings
from iterable_recipes.sync import connect
from iterable_recipes.sync.credentials import connection_params
from iterable_recipes.sync.definitions import IdentityKind, SyncDefinition, SyncKind, SyncMode
from tasks import iterable as iterable_tasks
from tasks.iterable import ITERABLE_TASK_OPTIONS, look_up_many, send_bulk


@contextmanager
def warehouse_connection() -> Iterator[Any]:
    """A connection from the SnowflakeCredentials block named in settings (it wins) or SNOWFLAKE_*."""
    settings = get_settings()
    block = None
    if settings.snowflake_credentials_block:
        from prefect_snowflake import SnowflakeCredentials

        block = SnowflakeCredentials.load(settings.snowflake_credentials_block, _sync=True)
    conn = connect(**connection_params(block, settings))
    try:
        yield conn
    finally:
        conn.close()


@dataclass
class BatchReport:
    """Iterable's answer to one sync batch by position: rejected (with reasons) and unknown people."""

    batch_no: int
    sent: int = 0
    rejected: dict[int, str] = field(default_factory=dict)
    not_found: list[int] = field(default_factory=list)


def _looks_up_first(defn: SyncDefinition) -> bool:
    """Update mode keyed by email: Iterable would create unknown people, so each is looked up first."""
    return (
        defn.kind is SyncKind.USER_PROFILES
        and defn.mode is SyncMode.UPDATE
        and defn.identity.kind is IdentityKind.EMAIL
    )


@task(name="deliver-sync-batch", **ITERABLE_TASK_OPTIONS)
def deliver_batch(defn: SyncDefinition, batch_no: int, items: Sequence[dict[str, Any]]) -> BatchReport:
    """Send one batch (users/bulkUpdate or events/trackBulk); unknown people are reported, never created."""
    client = iterable_tasks.shared_client()  # looked up at call time: one client per process
    report = BatchReport(batch_no)
    positions = list(range(len(items)))
    if _looks_up_first(defn):
        known: list[int] = []
        for position, found in zip(positions, look_up_many(client, [i["email"] for i in items]), strict=True):
            if isinstance(found, Exception):
                raise found  # a failed look-up is retryable or fatal for the batch, never "unknown"
            (known if found is not None else report.not_found).append(position)
        positions = known
    if positions:
        send = client.track_events if defn.kind is SyncKind.CUSTOM_EVENTS else client.bulk_update_users
        sent = send_bulk([items[p] for p in positions], send)
        report.sent = sent.sent
        for index, failure in sent.failures.items():
            if failure.category == "not_found":
                report.not_found.append(positions[index])
            else:
                report.rejected[positions[index]] = mask_emails(f"{failure.category}: {failure.reason}")
    return report
