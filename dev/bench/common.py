"""Helpers the benchmarks share: stand-ins in their own processes, a Prefect server, RSS, the JSON line."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

from dev.standins.serving import free_port
from iterable_recipes.masking import mask_emails

ROOT = Path(__file__).resolve().parents[2]
SANDBOX_ITERABLE_KEY = "sandbox-key"  # the stand-in's fixed key; not a credential of anything real
FAKESNOW_LOGIN = {"account": "fakesnow", "user": "fake", "password": "snow"}  # fakesnow accepts any login

__all__ = [
    "FAKESNOW_LOGIN",
    "ROOT",
    "SANDBOX_ITERABLE_KEY",
    "Spawned",
    "accepts",
    "fakesnow_server",
    "free_port",
    "http_ok",
    "iterable_standin",
    "last_json_line",
    "marketo_standin",
    "peak_rss_mb",
    "prefect_server",
    "print_json_line",
    "print_table",
    "run_json",
    "spawn",
]


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident set size of this process (or of its waited-for children), in MiB (Linux: KiB)."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


def accepts(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    """Whether GET ``url`` answers 2xx."""
    try:
        return httpx.get(url, timeout=2).is_success
    except httpx.HTTPError:
        return False


class Spawned:
    """A process started in its own session (stopping it stops its children too); output goes to a file."""

    def __init__(self, name: str, argv: Sequence[str], port: int, env: Mapping[str, str] | None = None):
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            start_new_session=True,
        )

    def output(self, chars: int = 2000) -> str:
        """The tail of the process's output, emails masked."""
        self._log.seek(0)
        return mask_emails(self._log.read().decode(errors="replace")[-chars:])

    def wait_until(self, ready: Callable[[], bool], timeout: float) -> Spawned:
        """Wait until ``ready()``; fail with the output's tail when the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start:\n{self.output()}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        """SIGTERM to the process's session, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
            except ProcessLookupError:
                pass
        self._log.close()


@contextmanager
def spawn(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    probe: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> Iterator[Spawned]:
    """Run ``argv`` until the block ends; wait for GET ``probe`` to answer 2xx (or the port to accept)."""
    spawned = Spawned(name, argv, port, env)
    try:
        ready = (lambda: http_ok(spawned.url + probe)) if probe else (lambda: accepts(port))
        yield spawned.wait_until(ready, timeout)
    finally:
        spawned.stop()


@contextmanager
def iterable_standin(limits: bool = True, profile_delay: float = 0.0) -> Iterator[Spawned]:
    """``python -m dev.standins.iterable`` in its own process (``--no-limits`` unless ``limits``;
    profile writes visible to look-ups ``profile_delay`` s after they were accepted)."""
    port = free_port()
    argv = [sys.executable, "-m", "dev.standins.iterable", "--port", str(port)]
    argv += [] if limits else ["--no-limits"]
    argv += ["--profile-delay", str(profile_delay)] if profile_delay else []
    with spawn("iterable stand-in", argv, port=port, probe="/_sandbox/stats") as s:
        yield s


@contextmanager
def marketo_standin() -> Iterator[Spawned]:
    """``python -m dev.standins.marketo`` in its own process."""
    port = free_port()
    argv = [sys.executable, "-m", "dev.standins.marketo", "--port", str(port)]
    with spawn("marketo stand-in", argv, port=port, probe="/_sandbox/stats") as s:
        yield s


@contextmanager
def fakesnow_server() -> Iterator[Spawned]:
    """``fakesnow -s -p PORT`` in its own process, so a client's RSS is its own alone."""
    port = free_port()
    exe = Path(sys.executable).with_name("fakesnow")
    with spawn("fakesnow", [str(exe), "-s", "-p", str(port)], port=port, timeout=30) as s:
        yield s


@contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """A temporary ``prefect server start`` on SQLite under ``home``; yields its API URL (…/api)."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": "",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_UI_ENABLED": "false",
    }
    argv = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with spawn("prefect server", argv, port=port, probe="/api/health", env=env, timeout=180) as s:
        yield s.url + "/api"


def last_json_line(text: str) -> dict[str, Any]:
    """The last line of ``text`` that parses as a JSON object; ValueError when there is none."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                return parsed
    raise ValueError("no JSON object line in the output")


def run_json(
    argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 3600
) -> dict[str, Any]:
    """Run ``argv`` to completion and return its last JSON line; RuntimeError (masked tail) on failure."""
    done = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=timeout,
        check=False,
    )
    try:
        if done.returncode != 0:
            raise ValueError(f"exit code {done.returncode}")
        return last_json_line(done.stdout)
    except ValueError as exc:
        tail = mask_emails((done.stdout + done.stderr)[-3000:])
        raise RuntimeError(f"{' '.join(argv[1:3])} failed ({exc}):\n{tail}") from None


def print_table(rows: Sequence[tuple[str, Any]]) -> None:
    """Two columns: name, figure (floats with thousands separators)."""
    width = max((len(name) for name, _ in rows), default=0)
    for name, value in rows:
        shown = f"{value:,.1f}" if isinstance(value, float) else str(value)
        print(f"{name:<{width}}  {shown:>14}")


def print_json_line(figures: Mapping[str, Any]) -> None:
    """The figures as one JSON object: always the last line a benchmark prints."""
    print(json.dumps(figures, sort_keys=True), flush=True)
