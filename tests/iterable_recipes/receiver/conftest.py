"""Receiver fixtures: the app served on a real socket over SQLite or PostgreSQL, and signing helpers."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from standardwebhooks import Webhook

from dev.standins.serving import serving
from iterable_recipes.receiver import Nudger, create_app
from iterable_recipes.settings import Settings
from iterable_recipes.store import Inbox, migrate

OLD_SECRET = "whsec_" + base64.b64encode(b"old-secret-old-secret-old-secre!").decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"new-secret-new-secret-new-secre!").decode()


class RecordingTrigger:
    """Stands in for Prefect where a test is about the receiver, not the nudge: records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def create_run(self, deployment: str, idempotency_key: str) -> str:
        with self.lock:
            self.calls.append((deployment, idempotency_key))
            return f"run-{len(self.calls)}"

    def healthy(self) -> bool:
        return True


def sign(
    body: str | bytes, msg_id: str, secret: str = NEW_SECRET, at: datetime | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for ``body``."""
    at = at or datetime.now(UTC)
    text_body = body.decode() if isinstance(body, bytes) else body
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, text_body),
        "content-type": "application/json",
    }


def trial(event_id: str = "evt-1", email: str = "person@example.com", **data: Any) -> dict[str, Any]:
    """A valid saas_trial_started event."""
    return {
        "version": "1",
        "id": event_id,
        "type": "saas_trial_started",
        "occurred_at": "2024-06-11T10:00:00Z",
        "person": {"email": email, "user_id": 7},
        "data": {"company": "ACME", "latest_trial_start_date": "2024-06-11"} | data,
    }


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass
class Receiver:
    url: str
    inbox: Inbox
    trigger: RecordingTrigger
    nudger: Nudger

    def stored(self) -> int:
        return sum(sum(by_status.values()) for by_status in self.inbox.counts().values())


@pytest.fixture(scope="session")
def migrated_pg(postgres_url: str) -> str:
    migrate(postgres_url)
    return postgres_url


def settings_for(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "recipes_database_url": url,
        "customersdot_webhook_secrets": [NEW_SECRET, OLD_SECRET],
        "webhook_max_body_bytes": 4096,
        "nudge_window_seconds": 0.2,
        # The watcher's runs are test_watch.py's; elsewhere only the nudges' calls are counted.
        "due_watch_seconds": 0,
    }
    return Settings(**(values | overrides))


def make_url(backend: str, request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/recipes.db"
        migrate(url)
        return url
    url = request.getfixturevalue("migrated_pg")
    store = Inbox(url)
    with store.engine.begin() as conn:
        conn.execute(text("TRUNCATE received_events RESTART IDENTITY"))
    store.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def receiver(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Receiver]:
    """The receiver served on 127.0.0.1 over each backend, nudging a recording trigger."""
    url = make_url(request.param, request, tmp_path)
    settings = settings_for(url)
    inbox = Inbox(url)
    trigger = RecordingTrigger()
    nudger = Nudger(trigger, settings.nudge_window_seconds).start()
    with serving(create_app(settings, nudger, inbox=inbox)) as base:
        yield Receiver(base, inbox, trigger, nudger)
    nudger.stop()
    inbox.dispose()
