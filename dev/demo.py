"""`recipes demo`: the three recipes end to end on the embedded default, through the served deployments."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from dev.embedded import EmbeddedStack
from iterable_recipes.cli.local_stack import PREFECT_HOME, STATE_DIR, api_served_from, new_webhook_secret

DEMO_DIR = STATE_DIR / "demo"
WAREHOUSE_ROWS = 500
IN_ITERABLE = 300  # the first synthetic contacts already have an Iterable profile (the sync is update-only)
CHANGED_FRACTION = 0.05
RUN_TIMEOUT = 90.0
# Flow runs' console output is kept to warnings (their logs still reach the Prefect API and UI).
QUIET_CONSOLE = {
    f"PREFECT_LOGGING_HANDLERS_{handler}_LEVEL": "WARNING"
    for handler in ("CONSOLE", "CONSOLE_FLOW_RUNS", "CONSOLE_TASK_RUNS")
}


@dataclass
class Step:
    """One line of the summary: what ran, how it ended, and its counts (numbers and ids only)."""

    name: str
    state: str = "-"
    seconds: float = 0.0
    counts: dict[str, Any] = field(default_factory=dict)


def demo_stack() -> EmbeddedStack:
    """The demo's embedded stack: its own app database, limiter and logs, and the Prefect home of
    `recipes serve` (started afresh), so `serve --embedded` shows the demo's runs afterwards."""
    return EmbeddedStack(
        state_dir=DEMO_DIR, warehouse_rows=WAREHOUSE_ROWS, prefect_home=PREFECT_HOME, fresh_prefect=True
    )


def _fresh_dir() -> None:
    """A clean demo folder (app database, limiter, logs); Prefect's database is shared with serve."""
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)


def _customersdot_events(n: int) -> list[dict[str, Any]]:
    """Synthetic CustomersDot lifecycle events (trials and company registrations)."""
    events = []
    for i in range(n):
        kind = "saas_trial_started" if i % 2 == 0 else "free_registration"
        data: dict[str, Any] = {"company": "Acme", "firstName": "Ada", "country": "NL"}
        if kind == "free_registration":
            data["registration_kind"] = "company"
        events.append(
            {
                "version": "1",
                "id": f"evt-demo-{uuid.uuid4().hex[:12]}",
                "type": kind,
                "occurred_at": datetime.now(UTC).isoformat(),
                "person": {"email": f"demo-person-{i}@example.com", "user_id": str(10_000 + i)},
                "data": data,
            }
        )
    return events


def _signed(body: dict[str, Any], secret: str) -> tuple[bytes, dict[str, str]]:
    """Standard Webhooks headers for ``body``."""
    from standardwebhooks.webhooks import Webhook

    raw = json.dumps(body).encode()
    msg_id = f"msg_{secrets.token_hex(8)}"
    now = datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, now, raw.decode())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    return raw, headers


def _wait(what: str, check: Callable[[], bool], timeout: float = RUN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _run_counts(flow_run_id: Any) -> dict[str, Any]:
    """The counts table artifact the run ended with (every flow publishes one)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                type=ArtifactFilterType(any_=["table"]),
            )
        )
    counts: dict[str, Any] = {}
    for artifact in artifacts:
        if artifact.key and artifact.key.endswith("-counts"):
            data: Any = artifact.data
            rows = json.loads(data) if isinstance(data, str) else data or []
            counts |= {row["count"]: row["value"] for row in rows}
    return counts


def _run(deployment: str, parameters: dict[str, Any] | None = None) -> Step:
    """Run ``deployment`` through the served runner and wait for it to finish."""
    from prefect.deployments import run_deployment

    started = time.monotonic()
    run: Any = run_deployment(deployment, parameters=parameters or {}, timeout=RUN_TIMEOUT, poll_interval=1)
    step = Step(deployment.split("/", 1)[1], run.state.name if run.state else "?")
    step.seconds = time.monotonic() - started
    step.counts = _run_counts(run.id)
    return step


def _finished_runs(deployment: str, since: datetime) -> list[Any]:
    """The finished runs of ``deployment`` that started after ``since``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    final = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED]
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
            flow_run_filter=FlowRunFilter(
                start_time=FlowRunFilterStartTime(after_=since),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=final)),
            ),
        )


class Demo:
    """Drives the demo; every printed line holds counts, ids and masked values only."""

    def __init__(self, console: Console, keep: bool = False) -> None:
        self.console = console
        self.keep = keep
        self.holding = False
        self.steps: list[Step] = []
        self.stack = demo_stack()

    def say(self, text: str) -> None:
        self.console.print(f"[green]✓[/] {text}")

    def run(self) -> None:
        started = time.monotonic()
        with self.console.status("starting the embedded stack (Prefect server, stand-ins, fakesnow)..."):
            self.stack.start()
        os.environ |= {
            "CUSTOMERSDOT_WEBHOOK_SECRETS": new_webhook_secret(),
            "MARKETO_WEBHOOK_SECRET": secrets.token_urlsafe(24),
            "NUDGE_WINDOW_SECONDS": "0.5",
            "EVENT_NOT_FOUND_RETRY_SECONDS": "1",
        } | QUIET_CONSOLE
        self.stack.apply()
        from iterable_recipes.cli.serve import ensure_masking_key

        ensure_masking_key(self.stack.state_dir, self.console)
        self.say(f"embedded stack up ({time.monotonic() - started:.0f} s)")
        for part, what in self.stack.described:
            self.console.print(f"    {part:<13} {what}")
        self._seed()
        from prefect.settings import PREFECT_API_URL

        from dev.standins.serving import free_port
        from iterable_recipes.cli.serve import RunnerThread, build_deployments, start_receiver

        with self.console.status("serving the deployments of prefect.yaml and the receiver..."):
            # Schedules off: the demo starts each run itself, and backstop runs would only
            # compete for the CPU and the SQLite Prefect database.
            deployments = build_deployments(self.console, schedules_active=False)
            runner = RunnerThread(deployments, query_seconds=1).start()
            receiver = start_receiver("127.0.0.1", free_port(), PREFECT_API_URL.value())
        try:
            self.say(f"served {len(runner.deployments)} deployments; receiver at {receiver.url}")
            self._customersdot(receiver.url)
            self._marketo(receiver.url)
            self._snowflake()
            self._summary(time.monotonic() - started)
            if self.keep:
                self._hold()
        finally:
            ending()
            with self.console.status("stopping..."):
                receiver.stop()
                runner.stop()
                _schedules_as_declared(self.console)

    def _hold(self) -> None:
        """Keep every part up (the UI, the receiver, the served deployments) until SIGINT or SIGTERM."""
        from prefect.settings import PREFECT_API_URL

        ui = str(PREFECT_API_URL.value()).removesuffix("/api")
        self.holding = True
        self.console.print(f"Prefect UI: {ui} — Ctrl-C to stop")
        while True:  # the signal ends the wait by raising KeyboardInterrupt (see stopped_by_signals)
            threading.Event().wait(3600)

    def _seed(self) -> None:
        iterable = self.stack.env["ITERABLE_BASE_URL"]
        marketo = self.stack.env["MARKETO_BASE_URL"]
        people: list[dict[str, Any]] = [{"email": f"user{i}@example.com"} for i in range(IN_ITERABLE)]
        people += [{"email": "optout-known@example.com", "subscribedMessageTypeIds": [101]}]
        httpx.post(f"{iterable}/_sandbox/users", json=people, timeout=30).raise_for_status()
        leads = [
            {"id": 1, "email": "optout-known@example.com"},
            {"id": 2, "email": "optout-stranger@example.com"},
            {"id": 3, "email": "optout-polled@example.com"},
        ]
        httpx.post(f"{marketo}/_sandbox/leads", json={"leads": leads}, timeout=10).raise_for_status()
        self.say(f"seeded {IN_ITERABLE + 1} Iterable profiles and {len(leads)} Marketo leads")

    def _customersdot(self, receiver: str) -> None:
        since = datetime.now(UTC) - timedelta(seconds=1)
        secret = os.environ["CUSTOMERSDOT_WEBHOOK_SECRETS"]
        statuses = []
        for event in _customersdot_events(6):
            body, headers = _signed(event, secret)
            statuses.append(
                httpx.post(f"{receiver}/webhooks/customersdot", content=body, headers=headers).status_code
            )
        self.say(f"sent 6 signed CustomersDot events: answers {sorted(set(statuses))}")
        with self.console.status("waiting for the nudged customersdot-drain run..."):
            deployment = "customersdot-events/customersdot-drain"
            _wait("the CustomersDot drain", lambda: self._inbox_left("customersdot") == 0)
            _wait("the drain runs to finish", lambda: bool(_finished_runs("customersdot-drain", since)))
            runs = _finished_runs("customersdot-drain", since)
        # The nudges of a burst may make more than one run: add their counts up.
        states = {r.state.name for r in runs if r.state}
        step = Step(
            f"customersdot-drain ({len(runs)} nudged)",
            "Completed" if states == {"Completed"} else "/".join(states),
        )
        step.seconds = sum(r.total_run_time.total_seconds() for r in runs)
        for run in runs:
            for name, value in _run_counts(run.id).items():
                step.counts[name] = step.counts.get(name, 0) + value
        self.steps.append(step)
        self.say(f"{deployment}: {step.state}")

    def _inbox_left(self, source: str) -> int:
        from iterable_recipes.settings import load_settings
        from iterable_recipes.store import Inbox

        inbox = Inbox(load_settings().recipes_database_url)
        try:
            counts = inbox.counts(source).get(source, {})
        finally:
            inbox.dispose()
        return sum(counts.get(s, 0) for s in ("pending", "retry", "in_flight"))

    def _marketo(self, receiver: str) -> None:
        marketo = self.stack.env["MARKETO_BASE_URL"]
        since = datetime.now(UTC) - timedelta(minutes=5)
        for lead in (1, 2, 3):
            httpx.post(
                f"{marketo}/_sandbox/unsubscribe", json={"lead_id": lead}, timeout=10
            ).raise_for_status()
        # Lead 1 also arrives through Marketo's "Call Webhook"; the poll then finds all three.
        header = os.environ.get("MARKETO_WEBHOOK_HEADER", "X-Recipes-Secret")
        answer = httpx.post(
            f"{receiver}/webhooks/marketo/unsubscribe",
            json={"leadId": 1, "email": "optout-known@example.com", "unsubscribedAt": since.isoformat()},
            headers={header: os.environ["MARKETO_WEBHOOK_SECRET"]},
            timeout=10,
        )
        self.say(
            f"Marketo: 3 unsubscribes in the stand-in, 1 webhook for lead 1 (answer {answer.status_code})"
        )
        with self.console.status("running marketo-unsubscribe-poll (it drains the opt-outs)..."):
            step = _run("marketo-unsubscribe-poll/marketo-unsubscribe-poll", {"start": since.isoformat()})
            _wait("the opt-outs", lambda: self._inbox_left("marketo") == 0)
        step.counts |= {"opt-outs": self._optouts()}
        self.steps.append(step)
        self.say(f"marketo-unsubscribe-poll: {step.state}")

    def _optouts(self) -> str:
        from iterable_recipes.settings import load_settings
        from iterable_recipes.store import Inbox

        inbox = Inbox(load_settings().recipes_database_url)
        try:
            records = inbox.list_audit(limit=20)
        finally:
            inbox.dispose()
        return ", ".join(sorted({f"lead {r.lead_id}: {r.outcome}" for r in records}))

    def _snowflake(self) -> None:
        from iterable_recipes.cli.deployments import available, read_deployments

        syncs = [s for s in read_deployments() if s.entrypoint.startswith("flows/snowflake_sync.py")]
        if not syncs or not available(syncs[0]):
            self.console.print(
                "[yellow]skipped[/] the Snowflake sync: flows/snowflake_sync.py is not here yet"
            )
            return
        name = f"snowflake-sync/{syncs[0].name}"
        with self.console.status(f"running {syncs[0].name} (first run: every row is new)..."):
            first = _run(name)
        first.name += " #1"
        self.steps.append(first)
        self.say(f"{name} #1: {first.state}")
        from dev.warehouse import mutate

        with self.stack.warehouse() as conn:
            changed = mutate(conn, CHANGED_FRACTION, seed=1)
        self.say(f"changed {changed} rows of the model in fakesnow")
        with self.console.status("running it again (only the changed rows go)..."):
            second = _run(name)
        second.name += f" #2 ({changed} rows changed)"
        self.steps.append(second)
        self.say(f"{name} #2: {second.state}")

    def _summary(self, seconds: float) -> None:
        from prefect.settings import PREFECT_API_URL

        table = Table(title=f"recipes demo: {len(self.steps)} flow runs in {seconds:.0f} s")
        for column in ("flow run", "state", "s", "counts"):
            table.add_column(column)
        for step in self.steps:
            shown = ", ".join(f"{k} {v}" for k, v in step.counts.items() if _shown(k, v))
            table.add_row(step.name, step.state, f"{step.seconds:.0f}", shown)
        self.console.print(table)
        ui = str(PREFECT_API_URL.value()).removesuffix("/api")
        if not self.keep:
            self.console.print(f"Prefect UI: {ui} (stopped with the demo; `--keep` keeps it up)")
        self.console.print(
            f"Logs in {DEMO_DIR / 'logs'}. `recipes serve --embedded` shows these runs again (the same "
            f"Prefect database, {PREFECT_HOME}) with the schedules on; `recipes status` reports on it."
        )


def _schedules_as_declared(console: Console) -> None:
    """Give each served deployment's schedules prefect.yaml's active flags again: the demo registered
    them off, and `recipes serve` on the same Prefect database keeps the flags it finds there."""
    from prefect.client.orchestration import get_client

    from iterable_recipes.cli.deployments import available, full_name, read_deployments
    from iterable_recipes.cli.operating_state import read_on_server

    try:
        with get_client(sync_client=True) as client:
            for spec in filter(available, read_deployments()):
                on_server = read_on_server(client, full_name(spec))
                declared = {str(e["slug"]): bool(e.get("active", True)) for e in spec.schedules}
                for schedule in on_server.schedules if on_server else ():
                    wanted = declared.get(str(schedule.slug))
                    if on_server and wanted is not None and schedule.active != wanted:
                        client.update_deployment_schedule(on_server.id, schedule.id, active=wanted)
    except Exception as exc:  # stopping goes on; serve would start with these schedules off
        console.print(f"[yellow]schedules left off[/] ({type(exc).__name__}): `recipes serve` keeps them so")


def stopped_by_signals() -> None:
    """SIGTERM ends the demo as Ctrl-C (SIGINT) does, by KeyboardInterrupt, so every part is stopped."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def ending() -> None:
    """From here the demo is stopping: a second Ctrl-C or SIGTERM must not cut the stopping short (its
    parts run in sessions of their own and would be left running)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def _shown(name: str, value: Any) -> bool:
    """Summary counts worth a column: non-zero, and not the poll's per-stream detail."""
    detail = name.startswith(("activities_", "lead_changes_")) or name in ("unchanged", "rows_in_model")
    return value not in (0, "0", "", None) and not detail


def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the stack and its Prefect UI up after the runs (to Ctrl-C).")
    ] = False,
) -> None:
    """Run the three recipes end to end on the embedded default stack, then print a summary."""
    console = Console(width=None if Console().is_terminal else 110)
    served = api_served_from(PREFECT_HOME)
    if served:
        console.print(
            f"[red]A Prefect server runs on {PREFECT_HOME} ({served}):[/] the demo starts that database "
            "afresh; stop `recipes serve` first."
        )
        raise typer.Exit(2)
    stopped_by_signals()
    _fresh_dir()
    runner = Demo(console, keep=keep)
    try:
        runner.run()
    except KeyboardInterrupt:
        if not runner.holding:  # with --keep, Ctrl-C after the runs is the way to end
            console.print("[yellow]demo interrupted[/]")
            raise typer.Exit(130) from None
    except Exception as exc:
        console.print(f"[red]demo failed:[/] {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None
    finally:
        ending()
        runner.stack.stop()
    failed = [s.name for s in runner.steps if s.state != "Completed"]
    if failed:
        console.print(f"[red]not completed:[/] {', '.join(failed)}")
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(demo)
