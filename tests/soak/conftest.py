"""The soak test runs when RECIPES_SOAK=1; skipped otherwise (CI runs `make soak` after the suite).

When asked, it starts in its own process as soon as collection is done, so its minutes of waiting (a
killed run turns Crashed only after missed heartbeats) overlap the rest of the suite; test_soak collects
it. On two cores the two slow each other down, which is why CI runs the soak on its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from dev.processes import BIN, PROJECT
from tests.conftest import asked_by, gate_folder

SOAK_TEST = "tests/soak/test_soak.py::test_soak_small"


class BackgroundSoak:
    """`python -m dev.soak --size small` in its own session, its output kept in a file."""

    def __init__(self) -> None:
        handle, name = tempfile.mkstemp(prefix="recipes-soak-", suffix=".log")
        self.log = Path(name)
        with os.fdopen(handle, "wb") as out:
            self.process = subprocess.Popen(
                [str(BIN / "python"), "-m", "dev.soak", "--size", "small"],
                cwd=PROJECT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def result(self, timeout: float) -> tuple[int, str]:
        """The soak's exit code and output, once it has ended."""
        code = self.process.wait(timeout=timeout)
        return code, self.log.read_text(errors="replace")

    def stop(self) -> None:
        """End an unfinished soak as Ctrl-C would (it stops its processes and drops its databases)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log.unlink(missing_ok=True)


BACKGROUND = pytest.StashKey[BackgroundSoak]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the soak ``e2e``; it runs only when asked (it takes about nine minutes)."""
    reason = "soak: runs with RECIPES_SOAK=1 (`make soak`, after the suite in CI)"
    gate_folder(items, "soak", "e2e", asked_by("RECIPES_SOAK"), reason)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the soak now when it is selected and not skipped."""
    if session.config.option.collectonly:
        return
    for item in session.items:
        if item.nodeid == SOAK_TEST and not item.get_closest_marker("skip"):
            session.config.stash[BACKGROUND] = BackgroundSoak()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Never leave the soak running (a failed run under -x ends before test_soak collects it)."""
    soak = session.config.stash.get(BACKGROUND, None)
    if soak is not None:
        soak.stop()


@pytest.fixture
def background_soak(request: pytest.FixtureRequest) -> BackgroundSoak:
    """The soak started when collection finished."""
    return request.config.stash[BACKGROUND]
