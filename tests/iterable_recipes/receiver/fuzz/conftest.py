"""Fuzz targets: the receiver over a real socket (uvicorn) and in process (httpx.ASGITransport), with tallies.

FUZZ_EXAMPLES sets hypothesis's examples per test and target (CI default below); see docs/SECURITY.md
for the command that runs more than 10,000 requests by hand.
"""

from __future__ import annotations

import base64
import functools
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, settings

from dev.standins.serving import serving
from iterable_recipes.receiver import Nudger, create_app
from iterable_recipes.settings import Settings
from iterable_recipes.store import Inbox, migrate
from tests.iterable_recipes.receiver.conftest import RecordingTrigger

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
NEW_SECRET = "whsec_" + base64.b64encode(b"fuzz-new-secret-fuzz-new-secret!").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"fuzz-old-secret-fuzz-old-secret!").decode()
UNKNOWN_SECRET = "whsec_" + base64.b64encode(b"fuzz-unknown-secret-unknown-sec!").decode()
MARKETO_SECRET = "fuzz-marketo-shared-secret-7f3a9c"
MAX_BODY = 4096
CUSTOMERSDOT = "/webhooks/customersdot"
MARKETO = "/webhooks/marketo/unsubscribe"
# What no answer may ever contain: every configured secret, whole or as its base64 key.
SECRET_TEXTS = (NEW_SECRET, OLD_SECRET, MARKETO_SECRET, NEW_SECRET[6:], OLD_SECRET[6:])
TALLY: Counter[tuple[str, str, int]] = Counter()


@dataclass
class Target:
    """One running receiver: ``post`` sends a request and tallies its answer; ``stored`` counts the inbox."""

    name: str
    inbox: Inbox
    send: Any
    statuses: Counter[int] = field(default_factory=Counter)

    def post(self, path: str, content: bytes, headers: dict[str, str | bytes]) -> httpx.Response:
        if self.name == "socket":
            # uvicorn's parser refuses a wrong Content-Length before the app; only in process reaches it.
            headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
        answer: httpx.Response = self.send(path, content, headers)
        TALLY[(path, self.name, answer.status_code)] += 1
        return answer

    def stored(self) -> int:
        return sum(sum(by_status.values()) for by_status in self.inbox.counts().values())


def fuzz_settings(url: str) -> Settings:
    """Two CustomersDot secrets (rotation), the Marketo secret, and a small body limit to reach 413."""
    return Settings(
        recipes_database_url=url,
        customersdot_webhook_secrets=[NEW_SECRET, OLD_SECRET],
        marketo_webhook_secret=MARKETO_SECRET,
        webhook_max_body_bytes=MAX_BODY,
        nudge_window_seconds=0.2,
    )


@pytest.fixture(scope="session", params=["socket", "asgi"])
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The receiver with its own SQLite inbox, over uvicorn on 127.0.0.1 or in process."""
    url = f"sqlite:///{tmp_path_factory.mktemp(f'fuzz-{request.param}') / 'recipes.db'}"
    migrate(url)
    inbox = Inbox(url)
    nudger = Nudger(RecordingTrigger(), 0.2).start()
    app = create_app(fuzz_settings(url), nudger, inbox=inbox)
    try:
        if request.param == "socket":
            with serving(app) as base, httpx.Client(base_url=base, timeout=10) as client:
                yield Target("socket", inbox, lambda p, c, h: client.post(p, content=c, headers=h))
        else:
            with (
                start_blocking_portal() as portal,
                portal.wrap_async_context_manager(app.router.lifespan_context(app)),
            ):
                asgi_client = httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://fuzz"
                )
                try:
                    yield Target(
                        "asgi",
                        inbox,
                        lambda p, c, h: portal.call(
                            functools.partial(asgi_client.post, p, content=c, headers=h)
                        ),
                    )
                finally:
                    portal.call(asgi_client.aclose)
    finally:
        nudger.stop()
        inbox.dispose()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print how many fuzz requests each endpoint and target answered, by status."""
    if not TALLY:
        return
    terminalreporter.section("webhook fuzz")
    for path in (CUSTOMERSDOT, MARKETO):
        for name in ("socket", "asgi"):
            counts = {status: n for (p, t, status), n in sorted(TALLY.items()) if p == path and t == name}
            if counts:
                terminalreporter.line(f"{path} {name}: {sum(counts.values())} requests, by status {counts}")
    terminalreporter.line(f"total: {sum(TALLY.values())} requests (FUZZ_EXAMPLES={EXAMPLES})")
