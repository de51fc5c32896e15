"""One served stand-in per session (limits off unless a test turns them on), reset before every test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from dev.standins.iterable import IterableSandbox, SandboxOptions, create_app
from dev.standins.serving import serving

API_KEY = "sandbox-key"


@pytest.fixture(scope="session")
def served() -> Iterator[tuple[str, IterableSandbox]]:
    app = create_app(SandboxOptions(limits_enabled=False))
    with serving(app) as url:
        yield url, app.state.sandbox


@pytest.fixture
def sandbox(served: tuple[str, IterableSandbox]) -> IterableSandbox:
    served[1].reset()
    return served[1]


@pytest.fixture
def api(served: tuple[str, IterableSandbox], sandbox: IterableSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{served[0]}/api", headers={"Api-Key": API_KEY}, timeout=10) as client:
        yield client


@pytest.fixture
def control(served: tuple[str, IterableSandbox], sandbox: IterableSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{served[0]}/_sandbox", timeout=10) as client:
        yield client
