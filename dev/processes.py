"""Subprocesses for the e2e tests and the soak: each in its own session, stopped by id, logs kept."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from iterable_recipes.cli.local_stack import stop_process

BIN = Path(sys.executable).parent
PROJECT = Path(__file__).resolve().parents[1]


class Processes:
    """The processes of one test; ``stop_all`` ends each one it started, newest first."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.env = env
        self._started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], **extra_env: str) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the project directory with the test's environment."""
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            argv,
            cwd=PROJECT,
            env=self.env | extra_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self._started.append((name, process))
        return process

    def run(self, argv: list[str], timeout: float = 120) -> str:
        """Run ``argv`` to completion; its output, or an assertion error with it."""
        done = subprocess.run(
            argv, cwd=PROJECT, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert done.returncode == 0, f"{argv[:3]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        while self._started:
            _, process = self._started.pop()
            stop_process(process, grace_seconds=15)


def wait_for(
    what: str, check: Callable[[], object], timeout: float = 90, logs: str = "", every: float = 0.5
) -> Any:
    """Poll ``check`` every ``every`` seconds until it returns something truthy, and return that;
    TimeoutError naming ``what`` (with the end of ``logs``) otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs[-3000:]}".rstrip())
        time.sleep(every)


def answers(url: str) -> bool:
    """Whether ``url`` answers 2xx."""
    return httpx.get(url, timeout=2).is_success
