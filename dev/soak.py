"""The reliability soak: production topology, load, faults and one SIGKILL; then every promise checked.

    uv run python -m dev.soak --size small|full [--keep]

Stands up what tests/e2e/test_production.py stands up (Prefect server on PostgreSQL, `recipes setup`,
`prefect --no-prompt deploy --all`, a process worker, the receiver, the app database on PostgreSQL, the
limiter in Redis) plus the Marketo stand-in and fakesnow, all on 127.0.0.1. Then, at once: CustomersDot
events through the signed webhook, a Snowflake sync of the whole model, Marketo unsubscribes (logged in
the stand-in, half of them also through the "Call Webhook" route, then the poll), while the Iterable
stand-in answers about 10 % of requests with a 429, a 5xx, a held answer (past the client's timeout) or
a dropped connection. Once the sync is under way Iterable goes down for ``outage_seconds``; during the
outage the worker and its flow-run processes are killed with SIGKILL and a new worker is started (as a
supervisor would). Flow runs heartbeat every 30 s (Prefect's minimum) and the lost-runs automation is
installed with a 90 s window (the stuck-pending one, for runs the worker took but never started,
with 90 s), so the killed runs must turn Crashed, release their slots, and are then retried as an
operator would (`prefect flow-run retry ID`). The sync is run again after a change of the
model and after its rejected rows are fixed. Afterwards every promise of the reliability issue is
checked and printed with its numbers; the exit code is 1 when any check failed.

Only counts and ids are printed. Logs of every process are kept under the work folder (printed; removed
at the end unless --keep or a check failed).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from dev.processes import BIN, PROJECT, Processes, answers, wait_for
from iterable_recipes.cli.local_stack import free_ports, stop_process
from iterable_recipes.sync.definitions import SYNCS_DIR

SYNC = "gitlab_marketing_contacts"
SYNC_DEPLOYMENT = "snowflake-sync/snowflake-sync-gitlab-marketing-contacts"
POLL_DEPLOYMENT = "marketo-unsubscribe-poll/marketo-unsubscribe-poll"
DRAINS = ("customersdot-events/customersdot-drain", "marketo-opt-outs/marketo-opt-out-drain")
HEARTBEAT_SECONDS = 30  # Prefect's minimum (flow_engine.MINIMUM_HEARTBEAT_INTERVAL)
LOST_RUN_SECONDS = 90  # the lost-runs automation's window: three heartbeats (events are read late)
STUCK_PENDING_SECONDS = 90  # the stuck-pending automation's window: above a loaded worker's start time
ITERABLE_TIMEOUT_SECONDS = 5.0
SUBSCRIPTION_ENDPOINTS = (
    "users/updateSubscriptions",
    "users/bulkUpdateSubscriptions",
    "subscriptions/subscribe",
    "subscriptions/unsubscribe",
    "subscriptions/bulkSubscribe",
    "subscriptions/bulkUnsubscribe",
)
MARKETING_EMAIL_CHANNEL = 1
SEEDED_MESSAGE_TYPES = [101]  # each known lead's own choice: GitLab Marketing
FAKESNOW_LOGIN = {"account": "fakesnow", "user": "fake", "password": "snow"}
WAREHOUSE_DATABASE, WAREHOUSE_SCHEMA, STATE_SCHEMA = "ANALYTICS", "PUBLIC", "SYNC_STATE"
NOT_FINAL = ("RUNNING", "PENDING", "CANCELLING", "PAUSED")


@dataclass(frozen=True)
class Size:
    """How much load, and the timings of the faults."""

    name: str
    events: int
    rows: int
    unsubscribes: int
    outage_seconds: float
    broken_rows: int  # rows whose email Iterable rejects, until fixed
    mutate_fraction: float
    sync_batch_size: int
    drain_batch_size: int
    lease_seconds: int  # inbox lease: how long a killed drain's items wait before another drain takes them
    outage_at_progress: float  # the sync's progress (%) at which Iterable goes down
    kill_after_seconds: float  # into the outage
    posters: int


SIZES = {
    "small": Size("small", 500, 5_000, 50, 10, 5, 0.05, 250, 100, 60, 1, 3, 8),
    "full": Size("full", 10_000, 100_000, 1_000, 60, 50, 0.05, 1000, 1000, 150, 20, 5, 16),
}

# About 10 % of Iterable requests fail: drop (2 %), 5xx (3 %), 429 (3 %), held past the timeout (2 %).
FAULTS: dict[str, Any] = {
    "endpoint": "*",
    "drop_rate": 0.02,
    "error_rate": 0.03,
    "rate_429": 0.03,
    "retry_after": 1,
    "timeout_rate": 0.02,
    "hang_seconds": ITERABLE_TIMEOUT_SECONDS + 2,
}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Killed:
    """A flow-run process killed with the worker."""

    pid: int
    flow_run_id: str
    deployment: str = "?"
    state_at_kill: str = "?"


@dataclass
class Timeline:
    marks: list[tuple[str, float]] = field(default_factory=list)
    began: float = field(default_factory=time.monotonic)

    def mark(self, what: str) -> None:
        at = time.monotonic() - self.began
        self.marks.append((what, at))
        print(f"[{at:7.1f} s] {what}", flush=True)


# --- processes --------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces or parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first), read from /proc."""
    out, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def flow_run_id_of(pid: int) -> str | None:
    """The PREFECT__FLOW_RUN_ID of a flow-run process, from its environment."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for entry in raw.split(b"\0"):
        if entry.startswith(b"PREFECT__FLOW_RUN_ID="):
            return entry.split(b"=", 1)[1].decode()
    return None


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --- the soak ---------------------------------------------------------------------------------------


class Soak:
    def __init__(self, size: Size, work: Path) -> None:
        self.size = size
        self.work = work
        self.checks: list[Check] = []
        self.t = Timeline()
        self.tag = uuid.uuid4().hex[:8]
        self.dbs: list[str] = []
        self.redis_prefix = f"recipes-soak-{self.tag}"
        self.procs: Processes | None = None
        self.worker: Any = None
        self.receiver_process: Any = None
        self.workers = 0
        self.killed: list[Killed] = []
        self.lost: list[Killed] = []  # every run unfinished when the worker died
        self.event_ids: dict[str, str] = {}  # source id -> Iterable event id
        self.posted: Counter[str] = Counter()
        self.leads: dict[int, str] = {}
        self.sync_runs: list[str] = []
        self.notes: list[str] = []

    # -- helpers --

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)

    def client(self) -> Any:
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.api)

    def iterable(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = httpx.request(method, f"{self.iterable_url}/_sandbox/{path}", timeout=300, **kwargs)
        answer.raise_for_status()
        return answer.json()

    @contextmanager
    def warehouse(self) -> Iterator[Any]:
        import snowflake.connector

        conn = snowflake.connector.connect(
            **FAKESNOW_LOGIN, host="127.0.0.1", port=self.fakesnow_port, protocol="http",
            database=WAREHOUSE_DATABASE, schema=WAREHOUSE_SCHEMA, network_timeout=900,
            session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
        )  # fmt: skip
        try:
            yield conn
        finally:
            conn.close()

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        with self.warehouse() as conn:
            cur = conn.cursor()
            cur.execute(statement)
            try:
                return list(cur.fetchall())
            except Exception:
                return []

    def deployment_id(self, name: str) -> Any:
        with self.client() as client:
            return client.read_deployment_by_name(name).id

    def start_run(self, deployment: str, parameters: dict[str, Any] | None = None) -> str:
        with self.client() as client:
            run = client.create_flow_run_from_deployment(
                self.deployment_id(deployment), parameters=parameters or {}
            )
        return str(run.id)

    def run_state(self, run_id: str) -> Any:
        with self.client() as client:
            return client.read_flow_run(uuid.UUID(run_id))

    def wait_final(self, run_id: str, timeout: float) -> Any:
        return wait_for(
            f"flow run {run_id} to finish",
            lambda: (run := self.run_state(run_id)).state and run.state.is_final() and run,
            timeout,
        )

    def inbox_left(self) -> dict[str, int]:
        from iterable_recipes.store import Inbox

        inbox = Inbox(self.env["RECIPES_DATABASE_URL"])
        try:
            counts = inbox.counts()
        finally:
            inbox.dispose()
        return {
            source: sum(by.get(s, 0) for s in ("pending", "retry", "in_flight"))
            for source, by in counts.items()
        }

    def sync_progress(self, run_id: str) -> float:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

        with self.client() as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(run_id)]),
                    type=ArtifactFilterType(any_=["progress"]),
                )
            )
        return max((float(a.data) for a in artifacts if isinstance(a.data, int | float)), default=0.0)

    # -- stand up --

    def start(self) -> None:
        import psycopg

        from tests.conftest import POSTGRES_ADMIN_URL, REDIS_URL
        from tests.integration import WEBHOOK_SECRET

        size = self.size
        (self.work / "logs").mkdir(parents=True)
        prefect_db, app_db = f"recipes_soak_prefect_{self.tag}", f"recipes_soak_app_{self.tag}"
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            for name in (prefect_db, app_db):
                admin.execute(f'CREATE DATABASE "{name}"')
                self.dbs.append(name)
        base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
        asyncpg = base.replace("postgresql://", "postgresql+asyncpg://", 1)
        prefect_port, receiver_port, iterable_port, marketo_port, self.fakesnow_port = free_ports(5)
        self.api = f"http://127.0.0.1:{prefect_port}/api"
        self.iterable_url = f"http://127.0.0.1:{iterable_port}"
        self.marketo_url = f"http://127.0.0.1:{marketo_port}"
        self.receiver = f"http://127.0.0.1:{receiver_port}"
        self.marketo_secret = uuid.uuid4().hex
        syncs = self.work / "syncs"
        syncs.mkdir()
        shipped = yaml.safe_load((SYNCS_DIR / f"{SYNC}.yaml").read_text())
        # An upsert twin under the shipped name (so the deployment runs it): update mode keyed by email
        # looks every person up first at getByEmail's 100/s, which alone would take 17 min for 100,000.
        twin = shipped | {"mode": "upsert", "batch_size": size.sync_batch_size}
        (syncs / f"{SYNC}.yaml").write_text(yaml.safe_dump(twin, sort_keys=False))
        from dev.standins.marketo.state import SandboxOptions as MarketoOptions

        marketo = MarketoOptions()
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RECIPES_", "SNOWFLAKE_"))
        }
        env |= {
            "PREFECT_HOME": str(self.work / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_API_URL": self.api,
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"{asyncpg}/{prefect_db}",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
            "RECIPES_LOST_RUN_SECONDS": str(LOST_RUN_SECONDS),
            "RECIPES_STUCK_PENDING_SECONDS": str(STUCK_PENDING_SECONDS),
            "RECIPES_PROJECT_DIR": str(PROJECT),
            "RECIPES_DATABASE_URL": f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{app_db}",
            "LIMITER_BACKEND": "redis",
            "LIMITER_REDIS_URL": REDIS_URL,
            "LIMITER_KEY_PREFIX": self.redis_prefix,
            "ITERABLE_API_KEY": "sandbox-key",
            "ITERABLE_BASE_URL": self.iterable_url,
            "ITERABLE_TIMEOUT_SECONDS": str(ITERABLE_TIMEOUT_SECONDS),
            "MARKETO_BASE_URL": self.marketo_url,
            "MARKETO_CLIENT_ID": marketo.client_id,
            "MARKETO_CLIENT_SECRET": marketo.client_secret,
            "MARKETO_WEBHOOK_SECRET": self.marketo_secret,
            "CUSTOMERSDOT_WEBHOOK_SECRETS": WEBHOOK_SECRET,
            "SNOWFLAKE_ACCOUNT": FAKESNOW_LOGIN["account"],
            "SNOWFLAKE_USER": FAKESNOW_LOGIN["user"],
            "SNOWFLAKE_PASSWORD": FAKESNOW_LOGIN["password"],
            "SNOWFLAKE_DATABASE": WAREHOUSE_DATABASE,
            "SNOWFLAKE_SCHEMA": WAREHOUSE_SCHEMA,
            "SNOWFLAKE_STATE_SCHEMA": STATE_SCHEMA,
            "SNOWFLAKE_HOST": "127.0.0.1",
            "SNOWFLAKE_PORT": str(self.fakesnow_port),
            "SNOWFLAKE_PROTOCOL": "http",
            "SYNC_DEFINITIONS_DIR": str(syncs),
            "NUDGE_WINDOW_SECONDS": "0.5",
            # The soak starts its outage at a share of the sync's progress: published every second, not
            # every 5 s, or a small sync could finish between the first (0 %) and the next publication.
            "RECIPES_PROGRESS_SECONDS": "1",
            "INBOX_LEASE_SECONDS": str(size.lease_seconds),
            "DRAIN_BATCH_SIZE": str(size.drain_batch_size),
            "EVENT_NOT_FOUND_RETRY_SECONDS": "2",
        }
        # Flow runs' console output is kept to warnings (their logs still reach the Prefect API).
        for handler in ("CONSOLE", "CONSOLE_FLOW_RUNS", "CONSOLE_TASK_RUNS"):
            env[f"PREFECT_LOGGING_HANDLERS_{handler}_LEVEL"] = "WARNING"
        self.env = env
        procs = self.procs = Processes(self.work / "logs", env)
        py = str(BIN / "python")
        procs.start("iterable", [py, "-m", "dev.standins.iterable", "--port", str(iterable_port)])
        procs.start("marketo", [py, "-m", "dev.standins.marketo", "--port", str(marketo_port)])
        procs.start("fakesnow", [py, "-m", "fakesnow", "-s", "--port", str(self.fakesnow_port)])
        procs.start("prefect-server", [str(BIN / "prefect"), "server", "start", "--port", str(prefect_port)])
        wait_for(
            "the Iterable stand-in", lambda: answers(self.iterable_url + "/_sandbox/stats"), 60, every=0.3
        )
        wait_for("the Marketo stand-in", lambda: answers(self.marketo_url + "/_sandbox/stats"), 60, every=0.3)
        wait_for("fakesnow", lambda: accepts(self.fakesnow_port), 60, every=0.3)
        self.seed_warehouse()
        wait_for("the Prefect server", lambda: answers(self.api + "/health"), 180, every=0.5)
        self.t.mark("stand-ins, fakesnow and the Prefect server (PostgreSQL) up")
        setup = procs.run([str(BIN / "recipes"), "setup"])
        assert "automation recipes-lost-runs-crashed" in setup, setup
        procs.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], timeout=300)
        self.schedules(keep_drains=True)
        self.start_worker()
        self.receiver_process = procs.start(
            "receiver",
            [py, "-m", "iterable_recipes.receiver", "--port", str(receiver_port), "--log-level", "warning"],
        )
        wait_for("the receiver", lambda: answers(self.receiver + "/healthz"), 60, every=0.3)
        self.t.mark(
            "recipes setup, prefect deploy --all, worker and receiver up "
            f"(heartbeat {HEARTBEAT_SECONDS} s, lost-run window {LOST_RUN_SECONDS} s)"
        )

    def start_worker(self) -> None:
        assert self.procs is not None
        self.workers += 1
        name = f"soak-worker-{self.workers}"
        argv = [str(BIN / "prefect"), "worker", "start", "--pool", "recipes-process", "--name", name]
        self.worker = self.procs.start(name, argv)

    def schedules(self, keep_drains: bool) -> None:
        """Switch schedules off (the drains' 15-minute backstop stays on while ``keep_drains``) and
        drop the scheduled runs of the deployments switched off.

        The scheduler inserts runs without a Scheduled event, and Prefect's triggers hold a state
        event that follows an unseen one for up to 15 minutes (server/events/ordering); a run that
        goes Pending within 5 minutes of its insertion names its Scheduled state as the one it
        follows. So for 5 minutes after a deploy, a backstop run lost while Pending turns Crashed
        only after those 15 minutes: the soak, shorter than that, re-creates those early runs
        through the API, as Scheduled runs with events, under the scheduler's idempotency keys.
        """
        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterId,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.client.schemas.sorting import FlowRunSort
        from prefect.states import Scheduled

        def scheduled_runs(deployments: list[uuid.UUID]) -> list[Any]:
            return client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
                ),
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=deployments)),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,  # a page holds the earliest
            )

        with self.client() as client:
            off, kept = [], []
            for deployment in client.read_deployments():
                full = f"{_flow_name(client, deployment.flow_id)}/{deployment.name}"
                if keep_drains and full in DRAINS:
                    kept.append(deployment.id)
                    continue
                off.append(deployment.id)
                for schedule in client.read_deployment_schedules(deployment.id):
                    client.update_deployment_schedule(deployment.id, schedule.id, active=False)
            for run in scheduled_runs(off):
                client.delete_flow_run(run.id)
            early = datetime.now(UTC) + timedelta(minutes=6)
            for run in scheduled_runs(kept):
                created_by_scheduler = (run.idempotency_key or "").startswith("scheduled ")
                if not created_by_scheduler or run.expected_start_time > early:
                    continue
                client.delete_flow_run(run.id)
                client.create_flow_run_from_deployment(
                    run.deployment_id,
                    state=Scheduled(scheduled_time=run.expected_start_time),
                    idempotency_key=run.idempotency_key,
                )

    def seed_warehouse(self) -> None:
        from dev.warehouse import MODEL_TABLE, seed_model

        with self.warehouse() as conn:
            seed_model(conn, self.size.rows)
            conn.cursor().execute(
                f"UPDATE {MODEL_TABLE} SET EMAIL_ADDRESS = 'broken-' || GITLAB_DOTCOM_USER_ID || '@' "
                f"WHERE GITLAB_DOTCOM_USER_ID < {self.size.broken_rows}"
            )

    def seed_people(self) -> None:
        """Marketo leads (four in five known to Iterable, one in ten of those already opted out), each
        unsubscribing in Marketo (link, form or Salesforce sync)."""
        n = self.size.unsubscribes
        self.leads = {i: f"soak-lead-{i}@example.com" for i in range(1, n + 1)}
        known = [
            {"email": email, "subscribedMessageTypeIds": SEEDED_MESSAGE_TYPES}
            | ({"unsubscribedChannelIds": [1], "subscribedMessageTypeIds": []} if i % 10 == 1 else {})
            for i, email in self.leads.items()
            if i % 5 != 0
        ]
        self.iterable("POST", "users", json=known)
        leads = [{"id": i, "email": email} for i, email in self.leads.items()]
        httpx.post(f"{self.marketo_url}/_sandbox/leads", json={"leads": leads}, timeout=60).raise_for_status()
        with httpx.Client(timeout=30) as marketo:
            for i in self.leads:
                how = ("link", "form", "salesforce")[i % 3]
                marketo.post(f"{self.marketo_url}/_sandbox/unsubscribe", json={"lead_id": i, "how": how})
            marketo.post(f"{self.marketo_url}/_sandbox/noise", json={"n": n})
        self.t.mark(
            f"seeded {self.size.rows:,} warehouse rows ({self.size.broken_rows} with a broken email), "
            f"{n} Marketo unsubscribes ({len(known)} of those people in Iterable)"
        )

    def stop(self) -> None:
        """Stop every process started here (flow-run processes of the worker too), drop the databases
        and the limiter's keys."""
        orphans = (
            descendants(self.worker.pid) if self.worker is not None and self.worker.poll() is None else []
        )
        if self.procs is not None:
            self.procs.stop_all()
        for pid in orphans:  # flow-run processes run in sessions of their own
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.dbs:
            import psycopg

            from tests.conftest import POSTGRES_ADMIN_URL

            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
                for name in self.dbs:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        try:
            import redis

            from tests.conftest import REDIS_URL

            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(f"{self.redis_prefix}*"))
            if keys:
                client.delete(*keys)
        except Exception as exc:
            self.notes.append(f"could not clean the limiter's Redis keys: {exc}")

    # -- load --

    def pump_events(self) -> None:
        from iterable_recipes.clients.iterable_models import event_id_from
        from tests.integration import signed

        local = threading.local()

        def post(i: int) -> None:
            source_id = f"evt-soak-{self.tag}-{i:06d}"
            kind = "saas_trial_started" if i % 2 == 0 else "free_registration"
            data: dict[str, Any] = {"company": "Acme", "firstName": "Ada", "country": "NL"}
            if kind == "free_registration":
                data["registration_kind"] = "company"
            event = {
                "version": "1",
                "id": source_id,
                "type": kind,
                "occurred_at": datetime.now(UTC).isoformat(),
                "person": {"email": f"soak-person-{i}@example.com", "user_id": str(500_000 + i)},
                "data": data,
            }
            self.event_ids[source_id] = event_id_from("cdot", source_id)
            if not hasattr(local, "http"):
                local.http = httpx.Client(timeout=30)
            for attempt in range(6):
                body, headers = signed(event)  # a sender's retry signs again (new timestamp)
                try:
                    status = local.http.post(
                        f"{self.receiver}/webhooks/customersdot", content=body, headers=headers
                    ).status_code
                except httpx.HTTPError:
                    status = 0
                if status in (200, 202):
                    self.posted[f"customersdot {status}"] += 1
                    return
                self.posted[f"customersdot retried after {status}"] += 1
                time.sleep(0.5 * 2**attempt)
            self.posted["customersdot never accepted"] += 1

        with ThreadPoolExecutor(self.size.posters) as pool:
            list(pool.map(post, range(self.size.events)))

    def pump_marketo_webhooks(self) -> None:
        with httpx.Client(timeout=30) as http:
            for i, email in self.leads.items():
                if i % 2:
                    continue
                body = {"leadId": i, "email": email, "unsubscribedAt": datetime.now(UTC).isoformat()}
                status = http.post(
                    f"{self.receiver}/webhooks/marketo/unsubscribe",
                    json=body,
                    headers={"X-Recipes-Secret": self.marketo_secret},
                ).status_code
                self.posted[f"marketo webhook {status}"] += 1

    # -- the kill --

    def kill_worker(self) -> None:
        """SIGKILL the worker and every flow-run process under it (found as its descendants)."""
        worker = self.worker
        below = descendants(worker.pid)
        runs = {pid: run_id for pid in below if (run_id := flow_run_id_of(pid))}
        os.kill(worker.pid, signal.SIGKILL)
        for pid in below:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        worker.wait(timeout=10)
        with self.client() as client:
            for pid, run_id in runs.items():
                run = client.read_flow_run(uuid.UUID(run_id))
                deployment = client.read_deployment(run.deployment_id).name if run.deployment_id else "-"
                state = run.state.name if run.state else "?"
                self.killed.append(Killed(pid, run_id, deployment, state))
            # No other worker runs now: every unfinished run was the killed worker's.
            by_id = {k.flow_run_id: k for k in self.killed}
            for run in self.unfinished_runs():
                deployment = client.read_deployment(run.deployment_id).name if run.deployment_id else "-"
                state = run.state.name if run.state else "?"
                self.lost.append(by_id.get(str(run.id), Killed(0, str(run.id), deployment, state)))
        shown = ", ".join(f"{k.deployment} ({k.state_at_kill})" for k in self.killed)
        self.t.mark(
            f"SIGKILL: worker pid {worker.pid} and {len(below)} process(es) below it "
            f"({shown or 'no flow run'}); "
            f"{len(self.lost)} run(s) left unfinished: "
            + ", ".join(
                f"{k.deployment} ({k.state_at_kill}{', no process' if not k.pid else ''})" for k in self.lost
            )
        )

    # -- the run --

    def run(self) -> None:
        size = self.size
        self.start()
        self.seed_people()
        self.iterable("POST", "faults", json=FAULTS | {"seed": 7})
        self.t.mark("Iterable faults on: 2 % dropped, 3 % 5xx, 3 % 429, 2 % held past the client timeout")
        since = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
        sync_run = self.start_run(SYNC_DEPLOYMENT)
        self.sync_runs.append(sync_run)
        poll_run = self.start_run(POLL_DEPLOYMENT, {"start": since})
        self.t.mark(f"sync of {size.rows:,} rows and the Marketo poll started")
        # The webhooks start once the sync runs, so the worker starts the sync's process first.
        wait_for(
            "the sync run to be Running", lambda: self.run_state(sync_run).state.is_running(), 600, every=0.3
        )
        pumps = [
            threading.Thread(target=self.pump_events, name="events", daemon=True),
            threading.Thread(target=self.pump_marketo_webhooks, name="marketo", daemon=True),
        ]
        for pump in pumps:
            pump.start()
        self.t.mark(
            f"the sync run is Running; sending {size.events:,} CustomersDot webhooks and "
            f"{size.unsubscribes // 2} Marketo webhooks"
        )

        def under_way() -> bool:
            run = self.run_state(sync_run)
            if run.state and run.state.is_final():
                raise RuntimeError(f"the sync ended {run.state.name} before the outage and the kill")
            return self.sync_progress(sync_run) >= size.outage_at_progress

        wait_for(f"the sync to reach {size.outage_at_progress:.0f} %", under_way, 600, every=0.3)
        self.iterable("POST", "faults", json=FAULTS | {"outage_seconds": size.outage_seconds})
        outage_began = time.monotonic()
        self.t.mark(
            f"Iterable outage begins ({size.outage_seconds:.0f} s); "
            f"sync at {self.sync_progress(sync_run):.0f} %"
        )
        time.sleep(size.kill_after_seconds)
        self.kill_worker()
        killed_at = time.monotonic()
        time.sleep(2)
        self.start_worker()
        self.t.mark("a new worker started (as its supervisor would)")

        # Every run the killed worker had not finished (Running, or Pending: taken but not started) must
        # turn Crashed through the lost-runs and stuck-pending automations.
        lost = self.lost
        crashed: dict[str, tuple[Any, float, int | None]] = {}

        def all_crashed() -> bool:
            with self.client() as client:
                for k in lost:
                    if k.flow_run_id in crashed:
                        continue
                    run = client.read_flow_run(uuid.UUID(k.flow_run_id))
                    if run.state and run.state.is_crashed():
                        slots = None
                        if run.deployment_id:
                            limit = client.read_deployment(run.deployment_id).global_concurrency_limit
                            slots = limit.active_slots if limit else None
                        crashed[k.flow_run_id] = (run.state, time.monotonic() - killed_at, slots)
            return len(crashed) == len(lost)

        try:
            wait_for(
                "the killed runs to turn Crashed",
                all_crashed,
                max(LOST_RUN_SECONDS, STUCK_PENDING_SECONDS) + 150,
                every=1,
            )
        except TimeoutError as exc:
            self.notes.append(str(exc))
        self.t.mark(f"{len(crashed)} of {len(lost)} killed runs Crashed")
        with self.client() as client:
            for k in lost:
                if k.flow_run_id not in crashed:
                    history = client.read_flow_run_states(uuid.UUID(k.flow_run_id))
                    self.notes.append(
                        f"not Crashed: {k.deployment} {k.flow_run_id}: "
                        + " -> ".join(f"{s.name}@{s.timestamp:%H:%M:%S}" for s in history)
                    )
        self.check(
            "the worker and a flow-run process killed mid-run (SIGKILL)",
            any(k.flow_run_id == sync_run for k in lost) and len(lost) >= 1,
            f"{len(lost)} unfinished run(s) killed, the sync among them: "
            f"{any(k.flow_run_id == sync_run for k in lost)}; "
            f"{killed_at - outage_began:.0f} s into the outage",
        )
        messages = {str(state.message) for state, _, _ in crashed.values()}
        delays = [seconds for _, seconds, _ in crashed.values()]
        self.check(
            "every killed run marked Crashed by the automations (heartbeats lost, or stuck Pending)",
            bool(lost)
            and len(crashed) == len(lost)
            and all(m.startswith(("No heartbeat", "Pending for")) for m in messages),
            f"{len(crashed)}/{len(lost)} Crashed, "
            f"{min(delays, default=0):.0f}-{max(delays, default=0):.0f} s "
            f"after the kill; {'; '.join(sorted(messages))}",
        )
        slots = {k.deployment: crashed[k.flow_run_id][2] for k in lost if k.flow_run_id in crashed}
        self.check(
            "a Crashed run's concurrency slot is released",
            all(v in (0, None) for v in slots.values()) and SYNC_DEPLOYMENT.split("/")[1] in slots,
            "active slots right after Crashed: "
            + ", ".join(f"{name} {'no limit' if v is None else v}" for name, v in sorted(slots.items())),
        )
        # The operator retries each crashed run: same flow run id, picked up by the new worker.
        procs = self.procs
        assert procs is not None
        # A subflow (the poll's opt-out drain) has no deployment: retrying its parent runs it again.
        retryable = [k.flow_run_id for k in lost if k.flow_run_id in crashed and k.deployment != "-"]
        # At once, as several operators might: each CLI start costs seconds on two cores.
        with ThreadPoolExecutor(len(retryable) or 1) as pool:
            list(
                pool.map(
                    lambda run_id: procs.run([str(BIN / "prefect"), "flow-run", "retry", run_id]), retryable
                )
            )
        self.t.mark(f"operator: `prefect flow-run retry` for {len(retryable)} crashed run(s)")
        retried = {run_id: self.wait_final(run_id, 900) for run_id in retryable}
        self.check(
            "every crashed run retried to Completed (same run id)",
            bool(retried) and all(r.state.is_completed() for r in retried.values()),
            ", ".join(
                f"{next(k.deployment for k in lost if k.flow_run_id == i)} {r.state.name} "
                f"run_count {r.run_count}" + ("" if r.state.is_completed() else f" ({r.state.message})")
                for i, r in retried.items()
            ),
        )
        self.t.mark("crashed runs retried")

        for pump in pumps:
            pump.join(timeout=1800)
        self.t.mark(f"webhooks sent: {dict(sorted(self.posted.items()))}")
        if poll_run not in crashed:
            self.wait_final(poll_run, 900)
        # The poll's 5-minute schedule is off during the soak; run it once more, as the schedule would.
        self.wait_final(self.start_run(POLL_DEPLOYMENT), 900)
        wait_for(
            "the inboxes to empty (drains nudged, the receiver's due-work watcher, leases of killed drains)",
            lambda: not any(self.inbox_left().values()),
            size.lease_seconds + 600,
            every=2,
        )
        self.t.mark("inboxes empty")
        self.sync_phases()
        self.iterable("DELETE", "faults")
        self.schedules(keep_drains=False)
        # The receiver is the last maker of runs: its watcher starts an opt-out drain whenever the
        # re-check of someone unknown to Iterable comes due (on a backoff of minutes), so "nothing
        # running" holds only once it is stopped, as schedules are.
        stop_process(self.receiver_process, grace_seconds=15)
        wait_for("no flow run left Running or Pending", self.nothing_running, 300, every=2)
        self.t.mark("faults off, schedules off, receiver stopped, nothing running")
        self.verify()

    def run_sync_until_completed(self, what: str, attempts: int = 4) -> str:
        """Run the sync; a run that failed (batches not accepted under the faults) is run again, as
        its failure message tells the operator. Returns the completed run's id."""
        for attempt in range(1, attempts + 1):
            run_id = self.start_run(SYNC_DEPLOYMENT)
            self.sync_runs.append(run_id)
            run = self.wait_final(run_id, 1200)
            if run.state.is_completed():
                self.t.mark(f"sync {what}: Completed (attempt {attempt})")
                return run_id
            self.t.mark(f"sync {what}: {run.state.name} (attempt {attempt}); running it again")
        raise RuntimeError(f"the sync ({what}) did not complete in {attempts} runs")

    def sync_phases(self) -> None:
        from dev.warehouse import MODEL_TABLE, mutate

        # The crashed run's retry may have failed batches; finish the first full sync if so.
        if not self.run_state(self.sync_runs[0]).state.is_completed():
            self.run_sync_until_completed("first sync, again")
        self.rejected_after_first = self.sql(
            f"SELECT COUNT(*) FROM {STATE_SCHEMA}.SYNC_REJECTED WHERE SYNC_NAME = '{SYNC}'"
        )[0][0]
        with self.warehouse() as conn:
            self.mutated = mutate(conn, self.size.mutate_fraction, seed=11)
        self.t.mark(f"{self.mutated:,} rows of the model changed")
        self.changed_run = self.run_sync_until_completed("after the change")
        with self.warehouse() as conn:
            conn.cursor().execute(
                f"UPDATE {MODEL_TABLE} "
                "SET EMAIL_ADDRESS = 'fixed-' || GITLAB_DOTCOM_USER_ID || '@example.com' "
                f"WHERE GITLAB_DOTCOM_USER_ID < {self.size.broken_rows}"
            )
        self.fixed_run = self.run_sync_until_completed("after fixing the rejected rows")
        self.last_run = self.run_sync_until_completed("once more (nothing should be left)")

    def nothing_running(self) -> bool:
        return not self.unfinished_runs()

    def unfinished_runs(self) -> list[Any]:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
        from prefect.client.schemas.objects import StateType

        with self.client() as client:
            return list(
                client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        state=FlowRunFilterState(
                            type=FlowRunFilterStateType(any_=[StateType(s) for s in NOT_FINAL])
                        )
                    )
                )
            )

    # -- checks --

    def sync_run_row(self, run_id: str) -> dict[str, Any]:
        key = re.sub(r"[^A-Za-z0-9_]", "_", run_id)[:64].upper()
        columns = ("STATUS", "NEW_ROWS", "CHANGED_ROWS", "REJECTED_RETRY", "TO_SEND", "ACCEPTED", "REJECTED")
        rows = self.sql(
            f"SELECT {', '.join(columns)} FROM {STATE_SCHEMA}.SYNC_RUNS WHERE UPPER(RUN_ID) = '{key}'"
        )
        return dict(zip(columns, rows[-1], strict=True)) if rows else {}

    def verify(self) -> None:
        from dev.warehouse import MODEL_TABLE
        from iterable_recipes.optouts.keys import SOURCE as MARKETO_SOURCE
        from iterable_recipes.store import Inbox

        size = self.size
        stats = self.iterable("GET", "stats")
        requests: dict[str, dict[str, int]] = stats["requests"]
        by_status: Counter[str] = Counter()
        for answers_ in requests.values():
            by_status.update(answers_)
        injected = {
            "429": by_status["429"],
            "5xx": sum(v for k, v in by_status.items() if k in ("500", "502", "503")),
            "held (timeouts)": by_status["hung"],
            "dropped": by_status["dropped"],
        }
        self.check(
            "faults were injected",
            all(injected.values()),
            f"{sum(by_status.values()):,} Iterable requests; "
            + ", ".join(f"{k} {v}" for k, v in injected.items()),
        )

        # Recipe 1: every event delivered, under its own id; re-sends within the batches in flight.
        writes: dict[str, int] = stats["event_writes"]
        expected = set(self.event_ids.values())
        cdot_writes = {i: n for i, n in writes.items() if i.startswith("cdot-")}
        foreign = set(cdot_writes) - expected
        missing = expected - {i for i, n in cdot_writes.items() if n >= 1}
        posted_ok = self.posted["customersdot 202"] + self.posted["customersdot 200"]
        self.check(
            "every CustomersDot event delivered, always under its own id",
            posted_ok == size.events and not missing and not foreign and len(cdot_writes) == size.events,
            f"{posted_ok:,}/{size.events:,} webhooks accepted, "
            f"{len(expected) - len(missing):,} ids in Iterable, "
            f"{len(missing)} missing, {len(foreign)} under another id",
        )
        resent = {i: n - 1 for i, n in cdot_writes.items() if n > 1}
        hung_track = requests.get("events/trackBulk", {}).get("hung", 0)
        killed_drains = sum(1 for k in self.killed if k.deployment == "customersdot-drain")
        in_flight = int(self.env.get("DRAIN_BATCHES_IN_FLIGHT", "4"))
        bound = size.drain_batch_size * (hung_track + in_flight * killed_drains)
        self.check(
            "event re-sends limited to batches in flight",
            sum(resent.values()) <= bound,
            f"{len(resent)} event(s) written more than once ({sum(resent.values())} extra writes); bound "
            f"{bound} = batch {size.drain_batch_size} x ({hung_track} held trackBulk answers + "
            f"{in_flight} in flight x {killed_drains} killed drain(s))",
        )
        inbox = Inbox(self.env["RECIPES_DATABASE_URL"])
        try:
            counts = inbox.counts()
            audit = inbox.list_audit(limit=100_000)
        finally:
            inbox.dispose()
        cdot = counts.get("customersdot", {})
        self.check(
            "CustomersDot inbox: every item delivered, none dead or waiting",
            cdot.get("delivered", 0) == size.events and sum(cdot.values()) == size.events,
            f"{dict(sorted(cdot.items()))}",
        )

        # Recipe 3: every changed row synced, every rejected row retried.
        users = {u["email"]: u for u in self.iterable("GET", "users")}
        model = self.sql(f"SELECT LOWER(EMAIL_ADDRESS), CURRENT_MEMBER_COUNT, GLM_SOURCE FROM {MODEL_TABLE}")
        stale = [
            email
            for email, members, source in model
            if email not in users
            or users[email]["dataFields"].get("current_member_count") != members
            or (source is not None and users[email]["dataFields"].get("glm_source") != source)
        ]
        mutated = sum(1 for _, _, source in model if source and source.startswith("mutated-"))
        self.check(
            "every row of the model (changed ones included) is in Iterable with its current values",
            not stale and mutated == self.mutated,
            f"{len(model) - len(stale):,}/{len(model):,} rows current ({mutated:,} changed after the first "
            f"sync); {len(stale)} stale",
        )
        changed = self.sync_run_row(self.changed_run)
        fixed = self.sync_run_row(self.fixed_run)
        last = self.sync_run_row(self.last_run)
        self.check(
            "every rejected row retried (and accepted once fixed)",
            self.rejected_after_first == size.broken_rows
            and changed.get("REJECTED_RETRY") == size.broken_rows
            and changed.get("REJECTED") == size.broken_rows
            and fixed.get("NEW_ROWS") == size.broken_rows
            and fixed.get("REJECTED") == 0,
            f"rejected by the first sync {self.rejected_after_first}/{size.broken_rows}; next run retried "
            f"{changed.get('REJECTED_RETRY')} (rejected again {changed.get('REJECTED')}); after the fix "
            f"{fixed.get('NEW_ROWS')} sent as new, {fixed.get('REJECTED')} rejected",
        )
        # A changed row that Iterable had rejected is counted as a rejected row retried, not as changed.
        mutated_valid = sum(
            1 for e, _, s in model if (s or "").startswith("mutated-") and not e.startswith("fixed-")
        )
        self.check(
            "the sync state holds everything: a last run has nothing to send",
            last.get("TO_SEND") == 0
            and changed.get("CHANGED_ROWS") == mutated_valid
            and changed.get("TO_SEND") == mutated_valid + size.broken_rows,
            f"run after the change: changed {changed.get('CHANGED_ROWS')} of {mutated_valid} (+ "
            f"{self.mutated - mutated_valid} rejected ones), to_send {changed.get('TO_SEND')}; last run: "
            f"to_send {last.get('TO_SEND')}",
        )
        profile_writes: dict[str, int] = stats["profile_writes"]
        untouched = [
            email for email, _, source in model if not (source or "").startswith("mutated-")
            and not email.startswith("fixed-")
        ]  # fmt: skip
        sync_resent = sum(max(0, profile_writes.get(email, 0) - 1) for email in untouched)
        hung_bulk = requests.get("users/bulkUpdate", {}).get("hung", 0)
        sync_bound = size.sync_batch_size * (hung_bulk + int(self.env.get("SYNC_BATCHES_IN_FLIGHT", "4")))
        self.check(
            "sync re-sends limited to batches in flight",
            sync_resent <= sync_bound,
            f"{sync_resent:,} extra writes of unchanged rows; bound {sync_bound:,} = batch "
            f"{size.sync_batch_size} x ({hung_bulk} held bulkUpdate answers + 4 in flight at the kill)",
        )

        # Recipe 2: every known person opted out, nobody created by the opt-out path.
        known = {i: e for i, e in self.leads.items() if i % 5 != 0}
        unknown = {i: e for i, e in self.leads.items() if i % 5 == 0}

        def opted_out(i: int, email: str) -> bool:
            # The channel left, the seeded message types untouched (dormant under the left channel).
            user = users.get(email, {})
            seeded_types = [] if i % 10 == 1 else SEEDED_MESSAGE_TYPES
            left = MARKETING_EMAIL_CHANNEL in (user.get("unsubscribedChannelIds") or [])
            return left and (user.get("subscribedMessageTypeIds") or []) == seeded_types

        not_out = [i for i, e in known.items() if not opted_out(i, e)]
        sub_writes: dict[str, int] = stats["subscription_writes"]
        rewritten = [i for i, e in known.items() if i % 10 == 1 and sub_writes.get(e, 0)]
        self.check(
            "every known person opted out, message types untouched (those already out not written again)",
            not not_out and not rewritten,
            f"{len(known) - len(not_out)}/{len(known)} opted out; {len(rewritten)} of "
            f"{sum(1 for i in known if i % 10 == 1)} already out written again",
        )
        created_by_optout = {k: v for k, v in stats["users_created"].items() if k in SUBSCRIPTION_ENDPOINTS}
        strangers = [i for i, e in unknown.items() if e in users or sub_writes.get(e, 0)]
        self.check(
            "nobody created by the opt-out path",
            not created_by_optout and not strangers,
            f"{len(unknown)} unsubscribed people unknown to Iterable: {len(strangers)} created or written; "
            f"users created by subscription endpoints: {created_by_optout or 0}",
        )
        marketo = counts.get(MARKETO_SOURCE, {})
        audited = {str(r.lead_id) for r in audit}
        self.check(
            "Marketo inbox: nothing waiting or dead; every lead has an audit record",
            not any(marketo.get(s, 0) for s in ("pending", "retry", "in_flight", "dead"))
            and audited >= {str(i) for i in self.leads},
            f"{dict(sorted(marketo.items()))}; {len(audited)}/{len(self.leads)} leads audited",
        )

        # Prefect: nothing Running, nothing holding a slot.
        with self.client() as client:
            limits = client.read_global_concurrency_limits(limit=200)
            held = {limit.name: limit.active_slots for limit in limits if limit.active_slots}
            runs: list[Any] = []
            while page := client.read_flow_runs(limit=200, offset=len(runs)):
                runs += page
        unfinished = self.unfinished_runs()
        states = Counter(r.state.name for r in runs if r.state)
        misfires = (
            (self.work / "logs" / "prefect-server.log")
            .read_text(errors="replace")
            .count("Action failed: 'Failed to set state: Run is already in terminal state")
        )
        # A killed subflow (the poll's opt-out drain) stays Crashed: the retried poll ran a new one.
        subflows = {k.flow_run_id for k in self.lost if k.deployment == "-"}
        crashed_now = {str(r.id) for r in runs if r.state and r.state.is_crashed()}
        self.check(
            "no live run crashed by mistake (every run ends Completed or Failed)",
            crashed_now <= subflows and set(states) <= {"Completed", "Failed", "Crashed", "Scheduled"},
            f"{len(crashed_now)} Crashed at the end ({len(crashed_now & subflows)} killed subflow(s), never "
            f"retried alone); {misfires} automation action(s) on runs already finished (refused, harmless)"
            + "".join(
                f"; {r.name} Crashed by mistake: {r.state.message}"
                for r in runs
                if str(r.id) in crashed_now - subflows
            ),
        )
        self.check(
            "no run left Running or holding a slot",
            not unfinished and not held,
            f"{len(unfinished)} unfinished; slots held: {held or 'none'} ({len(limits)} limits); "
            f"runs by state: {dict(sorted(states.items()))}",
        )


def _flow_name(client: Any, flow_id: Any) -> str:
    return str(client.read_flow(flow_id).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs) afterwards")
    args = parser.parse_args(argv)
    size = SIZES[args.size]
    work = Path(tempfile.mkdtemp(prefix="recipes-soak-"))
    soak = Soak(size, work)
    print(
        f"soak ({size.name}): {size.events:,} events, {size.rows:,} rows, "
        f"{size.unsubscribes:,} unsubscribes, "
        f"{size.outage_seconds:.0f} s outage, one SIGKILL; logs in {work / 'logs'}",
        flush=True,
    )
    error = None
    try:
        soak.run()
    except Exception as exc:
        error = exc
        traceback.print_exc()
    finally:
        soak.stop()
    for note in soak.notes:
        print(f"note: {note}")
    failed = [c.name for c in soak.checks if not c.ok]
    seconds = time.monotonic() - soak.t.began
    if error is not None or failed or not soak.checks:
        print(
            f"SOAK FAILED after {seconds:.0f} s: {len(failed)} failed check(s)"
            + (f", stopped by {type(error).__name__}: {error}" if error else ""),
            flush=True,
        )
        print(f"logs kept in {work / 'logs'}")
        return 1
    print(f"SOAK PASSED: {len(soak.checks)} checks in {seconds:.0f} s", flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
