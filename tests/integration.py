"""Helpers for end-to-end tests: the app pointed at a stand-in Iterable, a fresh app database, signing."""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from dev.standins.iterable.app import create_app as create_iterable
from dev.standins.iterable.options import SandboxOptions
from dev.standins.serving import ServerThread
from iterable_recipes.clients.iterable import IterableClient
from iterable_recipes.clients.limiter import InMemoryLimiter
from iterable_recipes.clients.retry import RetryPolicy
from iterable_recipes.resources import Resources, provided
from iterable_recipes.settings import load_settings
from tests.contract.iterable_spec import SpecCheckingTransport

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"integration-tests-secret-0123456").decode()
FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.5, jitter=0.1)


@dataclass
class IterableStandIn:
    """A stand-in Iterable served over a real socket, its state, and the spec-checking transport."""

    url: str
    sandbox: Any
    transport: SpecCheckingTransport


@pytest.fixture
def test_parts() -> dict[str, Any]:
    """The parts this test gives the flows it runs (a checked Iterable client, a Marketo factory)."""
    return {}


@pytest.fixture(autouse=True)
def _flows_use_test_parts(test_parts: dict[str, Any]) -> Iterator[None]:
    """Flows run by this test get Resources from the settings of the moment plus the test's parts."""
    with provided(lambda: Resources(load_settings(), **test_parts)):
        yield


@pytest.fixture
def iterable_standin(
    monkeypatch: pytest.MonkeyPatch, test_parts: dict[str, Any]
) -> Iterator[IterableStandIn]:
    """A stand-in Iterable with Iterable's limits; every request our tasks send is checked by the spec."""
    app = create_iterable(SandboxOptions())
    server = ServerThread(app).start()
    transport = SpecCheckingTransport(httpx.HTTPTransport())
    client = IterableClient(
        "sandbox-key",
        base_url=server.url,
        transport=transport,
        limiter=InMemoryLimiter(_rates()),
        retry=FAST_RETRY,
        timeout=5,
    )
    monkeypatch.setenv("ITERABLE_API_KEY", "sandbox-key")
    monkeypatch.setenv("ITERABLE_BASE_URL", server.url)
    # The flows' real client, over a real socket, with a transport that validates each body first.
    test_parts["iterable"] = client
    try:
        yield IterableStandIn(server.url, app.state.sandbox, transport)
    finally:
        client.close()
        server.stop()
        assert transport.violations == [], transport.violations


def _rates() -> dict[str, Any]:
    from iterable_recipes.clients.iterable import paced_rates

    settings = load_settings()
    return paced_rates(
        settings.iterable_rate_share,
        settings.iterable_list_writes_per_second,
        settings.iterable_rate_margin_seconds,
    )


@pytest.fixture
def app_database(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, migrated SQLite app database for this test."""
    from iterable_recipes.store.migrate import migrate

    url = f"sqlite:///{tmp_path / 'recipes.db'}"
    monkeypatch.setenv("RECIPES_DATABASE_URL", url)
    monkeypatch.setenv("CUSTOMERSDOT_WEBHOOK_SECRETS", WEBHOOK_SECRET)
    monkeypatch.setenv("EVENT_NOT_FOUND_RETRY_SECONDS", "0.2")
    migrate(url)
    return url


def customersdot_event(kind: str = "saas_trial_started", **data: Any) -> dict[str, Any]:
    """A valid CustomersDot event of ``kind`` for a synthetic person."""
    n = uuid.uuid4().hex[:10]
    body: dict[str, Any] = {
        "version": "1",
        "id": f"evt-{n}",
        "type": kind,
        "occurred_at": "2026-11-20T10:00:00+00:00",
        "person": {"email": f"person-{n}@example.com", "user_id": str(int(n, 16) % 10**8)},
        "data": {"company": "Acme", "firstName": "Ada", "country": "NL"} | data,
    }
    if kind == "free_registration":
        body["data"].setdefault("registration_kind", "company")
    return body


def signed(body: dict[str, Any], secret: str = WEBHOOK_SECRET) -> tuple[bytes, dict[str, str]]:
    """The body's bytes and Standard Webhooks headers signed with ``secret``."""
    raw = json.dumps(body).encode()
    msg_id = f"msg_{secrets.token_hex(8)}"
    now = int(time.time())
    from datetime import UTC, datetime

    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(now, tz=UTC), raw.decode())
    return raw, {
        "webhook-id": msg_id,
        "webhook-timestamp": str(now),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


@dataclass
class MarketoStandIn:
    """A stand-in Marketo over a real socket, its state, and the spec-checking transport."""

    url: str
    sandbox: Any
    transport: Any


@pytest.fixture
def marketo_standin(monkeypatch: pytest.MonkeyPatch, test_parts: dict[str, Any]) -> Iterator[MarketoStandIn]:
    """A stand-in Marketo; every request our tasks send is checked against Marketo's own spec."""
    from dev.standins.marketo.app import create_app as create_marketo
    from iterable_recipes.clients.marketo import MarketoClient
    from tests.contract.marketo_spec import MarketoSpecCheckingTransport

    app = create_marketo()
    server = ServerThread(app).start()
    transport = MarketoSpecCheckingTransport(httpx.HTTPTransport())
    monkeypatch.setenv("MARKETO_BASE_URL", server.url)
    monkeypatch.setenv("MARKETO_CLIENT_ID", "sandbox-client")
    monkeypatch.setenv("MARKETO_CLIENT_SECRET", "sandbox-secret")

    def client() -> MarketoClient:
        return MarketoClient(
            server.url, "sandbox-client", "sandbox-secret", transport=transport, retry=FAST_RETRY
        )

    test_parts["marketo"] = client
    try:
        yield MarketoStandIn(server.url, app.state.sandbox, transport)
    finally:
        server.stop()
        assert transport.violations == [], transport.violations


# An address in the clear: a local part and a domain around "@" without the masker's stars.
RAW_EMAIL = re.compile(r"[^\s*@'\"(),;]+@[^\s*@'\"(),;]+\.[a-z]{2,}", re.IGNORECASE)


def run_logs(run_id: UUID) -> list[str]:
    """Every message Prefect holds for flow run ``run_id`` (sent logs flushed first)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    messages: list[str] = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                limit=200,
                offset=len(messages),
            )
            messages += [log.message for log in page]
            if len(page) < 200:
                return messages


def task_run_names(run_id: UUID, expect: Iterable[str] = (), wait_seconds: float = 20.0) -> list[str]:
    """The names of the task runs of flow run ``run_id``, once they include every name of ``expect``
    (or ``wait_seconds`` passed): the server records task runs from their events, a moment after the
    flow run ends, so a busy machine can read the list before the last ones are in."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    wanted = set(expect)
    deadline = time.monotonic() + wait_seconds
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
            names = [run.name for run in runs]
            if wanted <= set(names) or time.monotonic() > deadline:
                return names
            time.sleep(0.2)


def flow_run_id(state: Any) -> UUID:
    """The id of the flow run that ended in ``state``."""
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    return run_id


def assert_no_raw_email(lines: list[str], emails: list[str]) -> None:
    """No line holds one of ``emails``, nor anything else shaped like an address in the clear."""
    for line in lines:
        assert not any(email.lower() in line.lower() for email in emails), line
        assert not RAW_EMAIL.search(line), line


def flow_run_artifacts(state: Any, key: str) -> list[Any]:
    """The artifacts named ``key`` that the flow run of ``state`` created, read from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    wanted = ArtifactFilter(
        key=ArtifactFilterKey(any_=[key]),
        flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
    )
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=wanted)


def announced_events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every event the runs' reports emit from now on, as emit_event was called."""
    import tasks.reporting

    announced: list[dict[str, Any]] = []
    monkeypatch.setattr(tasks.reporting, "emit_event", lambda **event: announced.append(event))
    return announced


# The settings that point the flows' warehouse at fakesnow (patch mode), its state schema SYNC_STATE.
FAKESNOW_SETTINGS = {
    "SNOWFLAKE_ACCOUNT": "fake",
    "SNOWFLAKE_USER": "fake",
    "SNOWFLAKE_PASSWORD": "fake",
    "SNOWFLAKE_DATABASE": "ANALYTICS",
    "SNOWFLAKE_SCHEMA": "PUBLIC",
    "SNOWFLAKE_STATE_SCHEMA": "SYNC_STATE",
}


def use_fakesnow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point this test's settings at fakesnow (the caller enters ``fakesnow.patch()``)."""
    for name, value in FAKESNOW_SETTINGS.items():
        monkeypatch.setenv(name, value)


@contextmanager
def fakesnow_warehouse(monkeypatch: pytest.MonkeyPatch, definitions: Path) -> Iterator[Any]:
    """fakesnow in patch mode, this test's settings pointed at it and its syncs read from
    ``definitions``; yields a connection to the database the flows' own connections see."""
    import fakesnow

    from iterable_recipes.sync import connect

    use_fakesnow(monkeypatch)
    monkeypatch.setenv("SYNC_DEFINITIONS_DIR", str(definitions))
    with fakesnow.patch():
        conn = connect(account="fake", user="fake", password="fake", database="ANALYTICS", schema="PUBLIC")
        try:
            yield conn
        finally:
            conn.close()
