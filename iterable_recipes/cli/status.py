"""`recipes status`: last run per deployment, inbox backlog, dead items and the last opt-outs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from iterable_recipes.masking import mask_emails

BACKLOG = ("pending", "retry", "in_flight")


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def last_runs(names: list[str]) -> list[tuple[str, str, str]]:
    """(deployment, state, when) of the newest run of each "flow/deployment"; raises when Prefect is down."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound

    rows = []
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                deployment = client.read_deployment_by_name(name)
            except ObjectNotFound:
                rows.append((name, "not deployed", ""))
                continue
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=10,
            )
            # The newest run that has started; scheduled future runs come first in this order.
            started = [r for r in runs if r.start_time is not None]
            run = started[0] if started else (runs[0] if runs else None)
            if run is None:
                rows.append((name, "no runs yet", ""))
            else:
                state = run.state.name if run.state and run.state.name else "?"
                rows.append((name, state, _when(run.start_time or run.expected_start_time)))
    return rows


def backlog_table(counts: dict[str, dict[str, int]]) -> Table:
    """Items per source and status (``counts`` as Inbox.counts returns it)."""
    statuses = sorted({status for per_source in counts.values() for status in per_source})
    table = Table(title="inbox by source and status")
    table.add_column("source")
    for status in statuses:
        table.add_column(status, justify="right")
    table.add_column("backlog", justify="right")
    for source, per_status in sorted(counts.items()):
        backlog = sum(per_status.get(s, 0) for s in BACKLOG)
        table.add_row(source, *(str(per_status.get(s, 0)) for s in statuses), str(backlog))
    return table


def status(
    limit: Annotated[int, typer.Option(help="How many dead items and opt-outs to list.")] = 10,
) -> None:
    """Report the last run of each deployment, the inbox backlog, dead items and the last opt-outs."""
    from iterable_recipes.cli.deployments import read_deployments
    from iterable_recipes.cli.inbox import items_table, open_inbox
    from iterable_recipes.cli.serve import served_names

    console = Console()
    runs = Table(title="deployments (last run)")
    for column in ("deployment", "state", "started"):
        runs.add_column(column)
    try:
        for row in last_runs(served_names(read_deployments())):
            runs.add_row(*row)
        console.print(runs)
    except Exception as exc:
        # A class name only: connection errors can carry URLs with credentials.
        console.print(f"[yellow]Prefect API unreachable ({type(exc).__name__}); set PREFECT_API_URL[/]")
    with open_inbox() as inbox:
        console.print(backlog_table(inbox.counts()))
        dead = inbox.list_items(status="dead", limit=limit)
        console.print(items_table(dead) if dead else "no dead items")
        audit = inbox.list_audit(limit=limit)
    optouts = Table(title=f"last opt-outs ({len(audit)})")
    for column in ("when", "trigger", "Marketo lead", "outcome", "detail"):
        optouts.add_column(column)
    for record in audit:
        optouts.add_row(_when(record.at), record.source, str(record.lead_id), record.outcome, _detail(record))
    console.print(optouts)


def _detail(record: Any) -> str:
    """Iterable's answer in short, masked (details are masked when stored; older rows may not be)."""
    response = record.iterable_response or {}
    text = str(response.get("detail") or "") if isinstance(response, dict) else str(response)
    return mask_emails(text)[:80]


def register(app: typer.Typer) -> None:
    """Add `recipes status` to ``app``."""
    app.command("status")(status)
