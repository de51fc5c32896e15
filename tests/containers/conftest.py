"""Container tests (marker ``containers``): `make containers` (RECIPES_CONTAINERS=1) or ``-m containers``.

They build deploy/Dockerfile with podman (minutes on two cores), so the main suite skips them and CI
runs them as a step of their own after it.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dev.processes import PROJECT
from tests.conftest import asked_by, gate_folder
from tests.containers import podman as pm

TAG = "localhost/iterable-recipes:containers-test"
# Planted in the build context as an operator's leftovers would be (.env, the app database, a
# generated secret); none of it may reach a layer.
CANARY_EMAIL = "canary.person@recipes-canary.net"


@dataclass
class Secrets:
    """This session's configured secrets: planted in the build context, then given to the containers."""

    iterable_api_key: str = field(default_factory=lambda: "itbl-" + secrets.token_hex(16))
    customersdot: str = field(
        default_factory=lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    )
    marketo: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def values(self) -> dict[str, str]:
        """Each variable and its value (the whsec_ secret's bare key too: it is what HMAC uses)."""
        return {
            "ITERABLE_API_KEY": self.iterable_api_key,
            "CUSTOMERSDOT_WEBHOOK_SECRETS": self.customersdot,
            "CUSTOMERSDOT_WEBHOOK_SECRETS (key)": self.customersdot.removeprefix("whsec_"),
            "MARKETO_WEBHOOK_SECRET": self.marketo,
        }


@dataclass
class Image:
    """The image this session built, how long that took, and the base it was built on."""

    tag: str
    base: str
    build_seconds: float
    base_seconds: float
    size: str


TIMINGS: dict[str, str] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test here ``containers``; skipped unless asked for."""
    wanted = asked_by("RECIPES_CONTAINERS") or "containers" in (config.getoption("markexpr", "") or "")
    reason = "containers: run with RECIPES_CONTAINERS=1 (make containers)"
    gate_folder(items, "containers", "containers", wanted, reason)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures the README and the issue quote: build time, image size, the topology's duration."""
    if TIMINGS:
        terminalreporter.section("container figures")
        for name, value in TIMINGS.items():
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(scope="session")
def configured_secrets() -> Secrets:
    return Secrets()


def _context(target: Path, planted: Secrets) -> Path:
    """What a fresh clone holds (tracked and unignored files), plus an operator's leftovers."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = PROJECT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    env_lines = [f"{name}={value}" for name, value in planted.values().items() if " " not in name]
    (target / ".env").write_text("\n".join(env_lines) + f"\nCANARY_EMAIL={CANARY_EMAIL}\n")
    (target / ".recipes").mkdir()
    (target / ".recipes" / "customersdot-webhook-secret").write_text(planted.customersdot)
    (target / ".recipes" / "inbox-export.json").write_text(f'{{"email": "{CANARY_EMAIL}"}}')
    return target


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory, configured_secrets: Secrets) -> Iterator[Image]:
    """deploy/Dockerfile built by podman from a clean copy of the checkout, on a local base unless
    RECIPES_CONTAINER_BASE names one (python:3.11-slim, say, where a registry is reachable)."""
    if not pm.available():
        pytest.fail("podman is not installed (make containers installs it)", pytrace=False)
    work = tmp_path_factory.mktemp("image")
    base = os.environ.get("RECIPES_CONTAINER_BASE", "")
    base_seconds = 0.0
    if not base:
        base = pm.LOCAL_BASE
        if pm.podman("image", "exists", base, check=False).returncode != 0:
            import time

            started = time.monotonic()
            subprocess.run([str(pm.BASE_SCRIPT), base], check=True, timeout=900)
            base_seconds = time.monotonic() - started
    context = _context(work / "context", configured_secrets)
    seconds = pm.build(context, TAG, base, work / "build.log")
    size = pm.podman("images", "--format", "{{.Size}}", TAG).stdout.strip()
    TIMINGS["image"] = f"{TAG} on {base}, {size}"
    TIMINGS["build"] = f"{seconds:.0f} s" + (
        f" (base image made first: {base_seconds:.0f} s)" if base_seconds else ""
    )
    yield Image(TAG, base, seconds, base_seconds, size)
