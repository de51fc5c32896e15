"""`recipes status`: each deployment's flags and runs, inbox backlog, dead items and the last opt-outs."""

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


def find_api() -> str | None:
    """The Prefect API `recipes serve` would use: PREFECT_API_URL (or the profile's) when set, else the
    embedded server a `recipes serve` from this folder runs, when it answers; None when neither."""
    from prefect.settings import PREFECT_API_URL

    from iterable_recipes.cli import local_stack

    configured = PREFECT_API_URL.value()
    # The folder and port read at call time, so a test can point them elsewhere.
    return configured or local_stack.running_local_api(local_stack.STATE_DIR, local_stack.PREFECT_PORT)


def _schedules(deployment: Any) -> str:
    """Each schedule by its slug (or its cron), on or off."""
    parts = []
    for schedule in deployment.schedules:
        label = schedule.slug or getattr(schedule.schedule, "cron", None) or "schedule"
        parts.append(f"{label} {'on' if schedule.active else 'off'}")
    return ", ".join(parts) or "none"


def _run_filter(client: Any, deployment_id: Any, types: list[Any], sort: Any) -> Any:
    """The first flow run of the deployment in one of the state ``types``, in ``sort`` order, or None."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )

    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=types))),
        sort=sort,
        limit=1,
    )
    return runs[0] if runs else None


def _state_name(run: Any) -> str:
    """The run's state name (Completed, Failed, Late, ...)."""
    return run.state.name if run.state and run.state.name else "?"


def deployment_row(client: Any, name: str) -> tuple[str, ...]:
    """(deployment, paused, schedules, last finished state, finished, next scheduled) of "flow/deployment"."""
    from prefect.client.schemas.objects import TERMINAL_STATES, StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound

    try:
        deployment = client.read_deployment_by_name(name)
    except ObjectNotFound:
        return (name, "not deployed", "", "", "", "")
    # Only runs in a terminal state: a run still going (or one scheduled ahead) has not finished.
    last = _run_filter(client, deployment.id, sorted(TERMINAL_STATES), FlowRunSort.END_TIME_DESC)
    upcoming = _run_filter(client, deployment.id, [StateType.SCHEDULED], FlowRunSort.EXPECTED_START_TIME_ASC)
    next_run = ""
    if upcoming is not None:
        # A scheduled run past its time is "Late": said beside the time.
        named = "" if _state_name(upcoming) == "Scheduled" else f" ({_state_name(upcoming)})"
        next_run = _when(upcoming.expected_start_time) + named
    return (
        name,
        "paused" if deployment.paused else "no",
        _schedules(deployment),
        _state_name(last) if last else "none yet",
        _when(last.end_time) if last else "",
        next_run or "none",
    )


def deployments_table(api_url: str, names: list[str]) -> Table:
    """A row per "flow/deployment" of ``names``, from the Prefect API at ``api_url``; raises when down."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    table = Table(title="deployments")
    for column in ("deployment", "paused", "schedules", "last finished", "finished at", "next scheduled"):
        table.add_column(column)
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        for name in names:
            table.add_row(*deployment_row(client, name))
    return table


def report_deployments(console: Console) -> bool:
    """Print the deployments table, or what to export to see it; whether it was printed."""
    from iterable_recipes.cli.deployments import read_deployments
    from iterable_recipes.cli.local_stack import PREFECT_PORT
    from iterable_recipes.cli.serve import served_names

    api_url = find_api()
    if api_url is None:
        console.print(
            "[yellow]Prefect API not found[/]: PREFECT_API_URL is not set and no Prefect server of "
            "`recipes serve` answers here. For the server `recipes serve` starts (or give your server's URL):"
        )
        export = f"export PREFECT_API_URL=http://127.0.0.1:{PREFECT_PORT}/api"
        console.print(export, markup=False, highlight=False, soft_wrap=True)  # one line, as typed
        return False
    try:
        console.print(deployments_table(api_url, served_names(read_deployments())))
    except Exception as exc:
        # A class name only: connection errors can carry URLs with credentials.
        console.print(f"[yellow]Prefect API unreachable ({type(exc).__name__}); check PREFECT_API_URL[/]")
        return False
    return True


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
    """Report each deployment's flags, last finished and next scheduled run, the inbox backlog, dead items
    and the last opt-outs. Exits 1 when the Prefect API is not found or unreachable (the rest prints)."""
    from iterable_recipes.cli.inbox import items_table, open_inbox

    console = Console()
    reported = report_deployments(console)
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
    if not reported:
        raise typer.Exit(1)  # the rest printed; the deployments could not be


def _detail(record: Any) -> str:
    """Iterable's answer in short, masked (details are masked when stored; older rows may not be)."""
    response = record.iterable_response or {}
    text = str(response.get("detail") or "") if isinstance(response, dict) else str(response)
    return mask_emails(text)[:80]


def register(app: typer.Typer) -> None:
    """Add `recipes status` to ``app``."""
    app.command("status")(status)
