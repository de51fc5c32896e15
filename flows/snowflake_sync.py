"""Recipe 3: sync a Snowflake model to Iterable, sending only rows changed since the last accepted sync.

The diff runs in the warehouse and is materialised once per run; batches are read back with fetchmany
and sent a few at a time within Iterable's limits; each accepted batch moves its row hashes into the
snapshot at once, so a crash or a retried flow run re-sends at most the batches that were in flight.
Rejected rows and people Iterable did not know are kept and tried again on later runs; an update-only sync
keyed by email first checks the people it has not seen in Iterable recently (getByEmail, or one user export
when there are many) and sends nobody Iterable does not know. Rows the sync
cannot send (a NULL, blank or duplicate identity) end the run "Completed with warnings", or refuse it
when the definition says ``on_invalid_rows: fail``. A dry run only reads: it previews a sample of the
rows field by field against Iterable, lists what it would not send and estimates the run's requests.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, cast

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Completed

from iterable_recipes.resources import Resources, run_resources
from iterable_recipes.sync.definitions import SYNCS_DIR, SyncDefinition, load_named_sync
from iterable_recipes.sync.delivery import send_batches
from iterable_recipes.sync.estimate import estimate_run
from iterable_recipes.sync.existence import ExistenceCheck, checks_existence
from iterable_recipes.sync.invalid import invalid_summary
from iterable_recipes.sync.preview import rows_it_would_not_send
from iterable_recipes.sync.results import ChangeSetSummary
from iterable_recipes.sync.state import CHANGE_LOG
from tasks.checks import check_before_run
from tasks.iterable import sync_batch_sender
from tasks.logs import capture_library_logs, run_logger
from tasks.reporting import (
    Progress,
    emit_alert,
    publish_counts,
    publish_markdown,
    publish_not_sent,
    publish_table,
)
from tasks.warehouse import (
    check_sync_existence,
    close_resync,
    finish_sync,
    list_invalid_rows,
    list_rows_not_sent,
    plan_sync,
    preview_sync,
)

SAMPLE_ROWS = 20  # rows a dry run previews field by field (one look-up each)
SYNC_COUNTS = (
    "rows_in_model", "new", "changed", "unchanged", "retried", "to_send", "rows_sent",
    "accepted", "rejected", "not_in_iterable", "duplicate_rows", "duplicate_identities", "null_identities",
    "failed_batches",
)  # fmt: skip
LIST_COUNTS = ("leaving", "removed", "held_back")  # a list sync's counts besides those
WARNINGS = "Completed with warnings"


def _run_id() -> str:
    """The flow run's id, so a retried flow run re-plans under the same name and resumes."""
    raw = str(flow_run.id or uuid.uuid4())
    return re.sub(r"[^A-Za-z0-9_]", "_", raw)[:64]


def _counts(summary: dict[str, Any], defn: SyncDefinition | None = None) -> dict[str, int]:
    """The counts every sync run reports (numbers only), a list sync's own ones too."""
    names: tuple[str, ...]
    if defn is not None and defn.is_list:
        names = SYNC_COUNTS + LIST_COUNTS
    elif defn is not None and defn.stages_departures:
        names = (*SYNC_COUNTS, "leaving", "removed")  # removed: people whose synced fields were cleared
    else:
        names = SYNC_COUNTS
    return {name: int(summary.get(name, 0) or 0) for name in names}


def _recipe(defn: SyncDefinition, dry_run: bool) -> str:
    """The name a run's reports go under: a dry run's apart, so it never stands as a real run's latest."""
    return f"sync-{defn.name}" + ("-dry-run" if dry_run else "")


def _invalid_rows_key(defn: SyncDefinition, dry_run: bool) -> str:
    """The invalid-rows artifact's key, one per sync so its runs line up in the UI (keys take no '_')."""
    return f"{_recipe(defn, dry_run).replace('_', '-')}-invalid-rows"


def _report_invalid_rows(
    conn: Any, defn: SyncDefinition, run_id: str, schema: str, plan: ChangeSetSummary, dry_run: bool
) -> None:
    """List the rows the run cannot send (masked) in an artifact and, on a real run, alert on them.

    A dry run is someone looking at a preview: it gets the list but raises no alert.
    """
    key = _invalid_rows_key(defn, dry_run)
    run_logger().warning("%s: never sent (listed, masked, in the artifact %s).", invalid_summary(plan), key)
    publish_table(
        key,
        list_invalid_rows(conn, defn, run_id, schema, plan),
        f"{invalid_summary(plan)} (identities masked; never sent)",
    )
    if not dry_run:
        emit_alert(
            f"sync-{defn.name}",
            "sync.invalid_rows",
            {
                "sync": defn.name,
                "null_identities": plan.null_identities,
                "duplicate_rows": plan.duplicate_rows,
                "duplicate_identities": plan.duplicate_identities,
            },
        )


def _preview(
    resources: Resources, conn: Any, defn: SyncDefinition, run_id: str, schema: str, plan: ChangeSetSummary
) -> None:
    """A dry run's report: a sample of the rows field by field against Iterable (read, never written),
    what a real run would not send and why, and its requests and time at Iterable's limits."""
    key = _recipe(defn, True)
    preview = preview_sync(resources, conn, defn, run_id, schema, SAMPLE_ROWS)
    publish_table(
        f"{key}-preview",
        preview.table(),
        f"Dry run of {defn.name}: {preview.sampled} sampled row(s), each field now in Iterable beside what "
        "a real run would write (identities and email-shaped values masked, sensitive fields hidden)",
    )
    publish_table(
        f"{key}-not-sent",
        rows_it_would_not_send(defn, plan, preview, _invalid_rows_key(defn, True)),
        f"Dry run of {defn.name}: what a real run would not send now, and why (counts)",
    )
    settings = resources.settings
    estimate = estimate_run(
        defn,
        plan,
        settings.iterable_rate_share,
        settings.iterable_list_writes_per_second,
        settings.iterable_rate_margin_seconds,
        settings.iterable_project_type,
    )
    publish_markdown(
        f"{key}-estimate",
        estimate.markdown(),
        f"Dry run of {defn.name}: requests and time at Iterable's limits",
    )
    run_logger().info(preview.sentence(estimate.sentence()))


def _refused(defn: SyncDefinition, plan: ChangeSetSummary) -> RuntimeError:
    """The error a run refused by ``on_invalid_rows: fail`` ends with (counts only)."""
    return RuntimeError(
        f"{invalid_summary(plan)}; on_invalid_rows is fail, so nothing was sent and the sync's state is "
        f"unchanged (see the artifact {_invalid_rows_key(defn, False)}); fix the model, or set "
        "on_invalid_rows: warn to send the other rows"
    )


def _not_accepted(defn: SyncDefinition, failed_batches: int, first_failure: str | None) -> RuntimeError:
    """The error a run ends with when Iterable did not accept some batches, naming the first cause."""
    first = f"; first: {first_failure}" if first_failure else ""
    return RuntimeError(
        f"{failed_batches} batch(es) of {defn.name} were not accepted{first}; their rows are sent "
        "again by the next run (or a retry of this one)"
    )


def _unchecked(defn: SyncDefinition, existence: ExistenceCheck) -> RuntimeError:
    """The error a run ends with when the existence check failed (its rows were not sent)."""
    return RuntimeError(
        f"the existence check of {defn.name} failed ({existence.error}); the rows of its "
        f"{existence.held:,} people were not sent and go again with the next run (or a retry of this one)"
    )


def _done_sentence(defn: SyncDefinition, summary: dict[str, Any]) -> str:
    """The run's closing line: what Iterable took, what is left for later runs and why."""
    if defn.is_list:
        return (
            f"Sync {defn.name} done: {summary['accepted']:,} member(s) added to list {defn.list_id} and "
            f"{summary['removed']:,} removed; {summary['held_back']:,} held back under a Marketo "
            f"suppression, {summary['rejected']:,} rejected and {summary['not_in_iterable']:,} not in "
            f"Iterable (all tried again by later runs); {summary['failed_batches']} batch(es) not accepted."
        )
    cleared = f" ({summary['removed']:,} cleared: they left the model)" if defn.stages_departures else ""
    return (
        f"Sync {defn.name} done: {summary['rows_sent']:,} row(s) sent, {summary['accepted']:,} accepted"
        f"{cleared}; {summary['rejected']:,} rejected and {summary['not_in_iterable']:,} not in Iterable "
        f"(both tried again by later runs); {summary['failed_batches']} batch(es) not accepted."
    )


def _ended(summary: dict[str, Any], defn: SyncDefinition, plan: ChangeSetSummary) -> dict[str, Any]:
    """The flow's return: the summary, in a Completed state named "Completed with warnings" when rows
    were left out, since a plain Completed would hide them (automations alert on the event instead).

    Prefect makes a State a flow returns its final state and gives a direct caller that state's data,
    so every caller still gets the summary dict; the cast says so to the type checker.
    """
    if not plan.invalid_rows:
        return summary
    if not plan.dry_run:
        rest = "the other rows were sent"
    elif defn.on_invalid_rows == "fail":
        rest = "a real run would be refused (on_invalid_rows is fail)"
    else:
        rest = "a real run would send the other rows"
    message = f"{invalid_summary(plan)}; {rest} (see the artifact {_invalid_rows_key(defn, plan.dry_run)})"
    return cast(dict[str, Any], Completed(name=WARNINGS, message=message, data=summary))


@flow(
    name="snowflake-sync",
    description="Sync a Snowflake model to Iterable profiles, custom events or a static list's members.",
)
def snowflake_sync(sync: str, dry_run: bool = False, full_resync: bool = False) -> dict[str, Any]:
    """Run the sync named ``sync`` (a file in SYNC_DEFINITIONS_DIR); ``dry_run`` previews and sends nothing;
    ``full_resync`` sends every row again, each once per resync however often the run is retried.

    Rows with a NULL, blank or duplicate identity are never sent: they are listed (masked) in an
    artifact, a ``recipes.sync.invalid_rows`` event announces them, and the run ends "Completed with
    warnings"; with ``on_invalid_rows: fail`` it fails before sending anything instead.
    """
    with run_resources() as resources:
        capture_library_logs()
        logger = run_logger()
        settings = resources.settings
        defn = load_named_sync(sync, settings.sync_definitions_dir or SYNCS_DIR)
        schema = settings.snowflake_state_schema
        run_id = _run_id()
        if not dry_run:  # a dry run only reads, and shows a read Iterable did not answer in its preview
            check_before_run(resources, ["iterable_key", "lists" if defn.is_list else "field_types"], [defn])
        with resources.warehouse() as conn:
            plan = plan_sync(conn, defn, run_id, schema, dry_run, full_resync)
            logger.info(plan.sentence())
            if plan.invalid_rows:
                _report_invalid_rows(conn, defn, run_id, schema, plan, dry_run)
            if dry_run:
                _preview(resources, conn, defn, run_id, schema, plan)
                counts = finish_sync(conn, defn, run_id, schema, "dry_run").as_dict()
                summary = plan.as_dict()
                publish_counts(
                    _recipe(defn, True), _counts(summary, defn), f"Dry run of {defn.name} (nothing sent)"
                )
                return _ended(summary | {"status": counts["status"]}, defn, plan)
            if plan.invalid_rows and defn.on_invalid_rows == "fail":
                # Refused after the plan, before any batch: the history row says so, the state is unmoved.
                finish_sync(conn, defn, run_id, schema, "refused")
                publish_counts(
                    _recipe(defn, False), _counts(plan.as_dict()), f"Sync {defn.name} refused (nothing sent)"
                )
                raise _refused(defn, plan)
            existence = ExistenceCheck()
            verified = checks_existence(defn)
            if verified and plan.to_send:
                existence = check_sync_existence(resources, conn, defn, run_id, schema)
                logger.info(existence.sentence())
            to_send = plan.to_send - existence.removed
            progress = Progress(
                f"Rows of {defn.name} sent to Iterable",
                f"sync-{defn.name}-progress",
                interval_seconds=settings.recipes_progress_seconds,
            )
            with resources.warehouse() as accept_conn:
                delivered = send_batches(
                    conn, accept_conn, defn, run_id, schema,
                    deliver=sync_batch_sender(resources, defn, plan.batches, verified),
                    depth=settings.sync_batches_in_flight,
                    progress=lambda done: progress.update(done, to_send),
                )  # fmt: skip
            progress.update(delivered.rows_answered, to_send, final=True)
            outcome = delivered.counts()
            status = "succeeded" if not outcome["failed_batches"] and not existence.held else "failed"
            if full_resync and status == "succeeded":
                close_resync(conn, defn, schema)
            rows, total = list_rows_not_sent(conn, defn, run_id, schema)
            publish_not_sent(
                f"{_recipe(defn, False)}-not-sent",
                rows,
                total,
                f"{total:,} row(s) of {defn.name} Iterable did not take this run, and what happens next "
                f"(identities masked; reference = the start of the identity's hash in "
                f"{schema}.{CHANGE_LOG})",
            )
            counts = finish_sync(conn, defn, run_id, schema, status, settings.sync_change_log_days).as_dict()
        summary = plan.as_dict() | counts | outcome | {"existence_checked": existence.needed}
        publish_counts(_recipe(defn, False), _counts(summary, defn), f"Sync {defn.name} to Iterable")
        logger.info(_done_sentence(defn, summary))
        if summary["rejected"]:
            emit_alert(
                f"sync-{defn.name}", "sync.rejected", {"rejected": summary["rejected"], "sync": defn.name}
            )
        if outcome["failed_batches"]:
            raise _not_accepted(defn, outcome["failed_batches"], delivered.first_failure)
        if existence.held:
            raise _unchecked(defn, existence)
        return _ended(summary, defn, plan)
