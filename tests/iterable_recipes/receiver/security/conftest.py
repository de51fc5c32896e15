"""A receiver in process (httpx.ASGITransport, lifespan run) and over a socket, with known secrets."""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import start_blocking_portal

from iterable_recipes.receiver import Nudger, create_app
from iterable_recipes.settings import Settings
from iterable_recipes.store import Inbox, migrate
from tests.iterable_recipes.receiver.conftest import RecordingTrigger

NEW_SECRET = "whsec_" + base64.b64encode(b"security-new-secret-32-bytes-ok!").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"security-old-secret-32-bytes-ok!").decode()
MARKETO_SECRET = "security-marketo-shared-secret-91c2"
MAX_BODY = 2048


@dataclass
class Served:
    """A running receiver: ``post`` sends one request; ``inbox`` is its store."""

    post: Callable[..., httpx.Response]
    inbox: Inbox
    app: Any

    def stored(self) -> int:
        return sum(sum(by_status.values()) for by_status in self.inbox.counts().values())


def security_settings(url: str) -> Settings:
    return Settings(
        recipes_database_url=url,
        customersdot_webhook_secrets=[NEW_SECRET, OLD_SECRET],
        marketo_webhook_secret=MARKETO_SECRET,
        webhook_max_body_bytes=MAX_BODY,
    )


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'recipes.db'}"
    migrate(url)
    return url


@pytest.fixture
def in_process(database: str) -> Iterator[Served]:
    """The receiver called in process: its logs land in this process, where caplog sees them."""
    inbox = Inbox(database)
    nudger = Nudger(RecordingTrigger(), 0.2).start()
    app = create_app(security_settings(database), nudger, inbox=inbox)
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(app.router.lifespan_context(app)),
    ):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver")

        def post(path: str, **kwargs: Any) -> httpx.Response:
            return portal.call(functools.partial(client.post, path, **kwargs))

        try:
            yield Served(post, inbox, app)
        finally:
            portal.call(client.aclose)
    nudger.stop()
    inbox.dispose()
