"""Recipe 3: sync a Snowflake model to Iterable, sending only rows changed since the last accepted sync.

The diff runs in the warehouse and is materialised once per run; batches are read back with fetchmany
and sent a few at a time within Iterable's limits; each accepted batch moves its row hashes into the
snapshot at once, so a crash or a retried flow run re-sends at most the batches that were in flight.
Rejected rows and people Iterable did not know are kept and tried again on later runs.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from iterable_recipes.resources import run_resources
from iterable_recipes.sync.definitions import SYNCS_DIR, load_named_sync
from iterable_recipes.sync.delivery import send_batches
from tasks.checks import check_before_run
from tasks.iterable import sync_batch_sender
from tasks.reporting import Progress, emit_alert, publish_counts
from tasks.warehouse import finish_sync, plan_sync, sample_sync

SAMPLE_ROWS = 20
SYNC_COUNTS = (
    "rows_in_model", "new", "changed", "unchanged", "retried", "to_send", "rows_sent",
    "accepted", "rejected", "not_in_iterable", "duplicate_rows", "null_identities", "failed_batches",
)  # fmt: skip


def _run_id() -> str:
    """The flow run's id, so a retried flow run re-plans under the same name and resumes."""
    raw = str(flow_run.id or uuid.uuid4())
    return re.sub(r"[^A-Za-z0-9_]", "_", raw)[:64]


def _counts(summary: dict[str, Any]) -> dict[str, int]:
    """The counts every sync run reports (numbers only)."""
    return {name: int(summary.get(name, 0) or 0) for name in SYNC_COUNTS}


@flow(name="snowflake-sync", description="Sync a Snowflake model to Iterable profiles or custom events.")
def snowflake_sync(sync: str, dry_run: bool = False) -> dict[str, Any]:
    """Run the sync named ``sync`` (a file in SYNC_DEFINITIONS_DIR); ``dry_run`` counts and samples only."""
    with run_resources() as resources:
        settings = resources.settings
        defn = load_named_sync(sync, settings.sync_definitions_dir or SYNCS_DIR)
        schema = settings.snowflake_state_schema
        run_id = _run_id()
        if not dry_run:  # a dry run reaches nothing but the warehouse
            check_before_run(resources, ["iterable_key", "field_types"], [defn])
        with resources.warehouse() as conn:
            plan = plan_sync(conn, defn, run_id, schema, dry_run)
            if dry_run:
                sample = sample_sync(conn, defn, run_id, schema, SAMPLE_ROWS)
                counts = finish_sync(conn, defn, run_id, schema, "dry_run").as_dict()
                create_table_artifact(
                    table=sample or [{"identity": "", "reason": "nothing would change", "batch": ""}],
                    key=f"{defn.name.replace('_', '-')}-dry-run-sample",
                    description=f"Dry run of {defn.name}: a masked sample of what would be sent",
                )
                summary = plan.as_dict()
                publish_counts(
                    f"sync-{defn.name}", _counts(summary), f"Dry run of {defn.name} (nothing sent)"
                )
                return summary | {"status": counts["status"]}
            progress = Progress(f"Rows of {defn.name} sent to Iterable")
            with resources.warehouse() as accept_conn:
                outcome = send_batches(
                    conn, accept_conn, defn, run_id, schema,
                    deliver=sync_batch_sender(resources, defn),
                    depth=settings.sync_batches_in_flight,
                    progress=lambda done: progress.update(done, plan.to_send),
                )  # fmt: skip
            status = "succeeded" if not outcome["failed_batches"] else "failed"
            counts = finish_sync(conn, defn, run_id, schema, status).as_dict()
        summary = plan.as_dict() | counts | outcome
        publish_counts(f"sync-{defn.name}", _counts(summary), f"Sync {defn.name} to Iterable")
        if summary["rejected"]:
            emit_alert(
                f"sync-{defn.name}", "sync.rejected", {"rejected": summary["rejected"], "sync": defn.name}
            )
        if outcome["failed_batches"]:
            raise RuntimeError(
                f"{outcome['failed_batches']} batch(es) of {defn.name} were not accepted; "
                "their rows are sent again by the next run (or a retry of this one)"
            )
        return summary
