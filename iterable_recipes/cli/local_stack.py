"""The embedded defaults `recipes serve` starts for what is not configured: a local Prefect server on
SQLite, the SQLite app database and the SQLite-file limiter, all under the state folder (.recipes/).

These are defaults, not stand-ins: they are the real Prefect server and real databases on one machine.
The Iterable, Marketo and Snowflake stand-ins are development tools (dev/embedded.py builds on this).
``LocalStack.env`` is what flow runs need to find the parts.
"""

from __future__ import annotations

import base64
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

STATE_DIR = Path(".recipes")
# The local Prefect server's home (its SQLite database): one for `recipes serve`, `serve --embedded` and
# `recipes demo`, so the UI any of them shows holds the runs of the others.
PREFECT_HOME = STATE_DIR / "prefect"
# Prefect's usual port, taken by the embedded server when free (so the UI is where Prefect's docs say).
PREFECT_PORT = 4200
# In the embedded server's PREFECT_HOME while it runs: its API URL, for `recipes status` to find it.
API_URL_FILE = "api-url"


def new_webhook_secret() -> str:
    """A fresh Standard Webhooks secret (``whsec_`` + base64 of 32 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_masking_key() -> str:
    """A fresh RECIPES_MASKING_KEY (32 random bytes, URL-safe base64)."""
    return secrets.token_urlsafe(32)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (``free_ports``)."""
    return free_ports(1)[0]


def ephemeral_range_start() -> int:
    """The first port of the kernel's ephemeral range, where outgoing connections take their ports."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; elsewhere a guess, checked by the bind in free_ports


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports below the kernel's ephemeral range: a port taken with bind(0) and
    let go is in that range, where any outgoing connection may take it before its server binds it."""
    low = ephemeral_range_start()
    held: list[socket.socket] = []
    try:
        for port in random.sample(range(max(1024, low - 12_000), low), 200):
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
            if len(held) == count:
                return [int(s.getsockname()[1]) for s in held]
    finally:
        for sock in held:
            sock.close()
    raise RuntimeError(f"no {count} free ports below {low}")


def stop_process(process: subprocess.Popen[Any], grace_seconds: float = 10) -> None:
    """Stop a process started in a session of its own: SIGTERM to the session, SIGKILL after a grace."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
    except ProcessLookupError:
        pass


@dataclass
class LocalParts:
    """Which embedded defaults to start: the Prefect server, the app database, the limiter file."""

    prefect: bool
    app_database: bool
    limiter: bool


@dataclass
class LocalStack:
    """Starts and stops the embedded defaults; ``env`` points the project's settings at them."""

    parts: LocalParts
    state_dir: Path = STATE_DIR
    prefect_home: Path = PREFECT_HOME
    prefect_port: int | None = None
    # The demo starts from an empty Prefect database each time (a copy of a migrated template), so
    # runs a killed demo left behind hold no concurrency slot; serve then shows the demo's runs.
    fresh_prefect: bool = False
    env: dict[str, str] = field(default_factory=dict)
    described: list[tuple[str, str]] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    _processes: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = field(default_factory=list)

    @property
    def logs_dir(self) -> Path:
        """Where each subprocess writes its output."""
        return self.state_dir / "logs"

    def start(self) -> LocalStack:
        """Start every needed part; on a failure, stop what was started and re-raise."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        try:
            self._spawn_parts()
            self._wait_parts()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn_parts(self) -> None:
        """Start the processes (they boot while the others start)."""
        if self.parts.prefect:
            self._spawn_prefect()

    def _wait_parts(self) -> None:
        """Wait for the processes and point ``env`` at every part."""
        if self.parts.app_database:
            path = (self.state_dir / "recipes.db").resolve()
            self.env["RECIPES_DATABASE_URL"] = f"sqlite:///{path}"
            self.described.append(("app database", f"SQLite file {self._shown(path)}"))
        if self.parts.limiter:
            path = (self.state_dir / "limiter.sqlite").resolve()
            self.env |= {"LIMITER_BACKEND": "sqlite", "LIMITER_SQLITE_PATH": str(path)}
            self.described.append(("rate limiter", f"SQLite file {self._shown(path)}"))
        if self.parts.prefect:
            url = self._wait_http("prefect-server", "/api/health", 120)
            self._migrated_marker().write_text(_prefect_version())
            self.env |= {"PREFECT_API_URL": url + "/api", "PREFECT_HOME": self.env_prefect_home}
            self._api_url_file().write_text(url + "/api")
            self.described.append(("Prefect", f"local server on SQLite, UI at {url}"))

    def _shown(self, path: Path) -> str:
        """A path relative to the working directory when it is under it (nothing machine-specific)."""
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return path.name

    def _spawn(self, name: str, argv: list[str], port: int, env: dict[str, str] | None = None) -> None:
        log = (self.logs_dir / f"{name}.log").open("ab")
        # A new session, so stopping it also stops what it started (the Prefect server's own children).
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self._processes.append((name, process, log))
        self.urls[name] = f"http://127.0.0.1:{port}"

    def _wait(self, name: str, ready: Any, timeout: float) -> str:
        """Wait until ``ready(url)`` is true; fail early when the process already exited."""
        process = next(p for n, p, _ in self._processes if n == name)
        url = self.urls[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited early; see {self.logs_dir / (name + '.log')}")
            if ready(url):
                return url
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not answer within {timeout:.0f} s; see {self.logs_dir}")

    def _wait_http(self, name: str, probe: str, timeout: float) -> str:
        """Wait until ``probe`` under the part's URL answers 2xx; returns the part's URL."""

        def ready(url: str) -> bool:
            try:
                return httpx.get(url + probe, timeout=2).is_success
            except httpx.HTTPError:
                return False

        return self._wait(name, ready, timeout)

    def _spawn_python(self, name: str, module: str, *args: str) -> None:
        port = free_port()
        self._spawn(name, [sys.executable, "-m", module, *args, "--port", str(port)], port)

    @property
    def env_prefect_home(self) -> str:
        """PREFECT_HOME of the embedded server (its SQLite database lives there)."""
        return str(self.prefect_home.resolve())

    def _api_url_file(self) -> Path:
        """Where the embedded server's API URL is kept while it runs (see ``running_local_api``)."""
        return Path(self.env_prefect_home) / API_URL_FILE

    def _migrated_marker(self) -> Path:
        return Path(self.env_prefect_home) / "migrated-by-version"

    def _migrated_template(self) -> Path:
        """An empty Prefect database, migrated once per Prefect version (copying it takes no time)."""
        template = (STATE_DIR / "prefect-template" / f"prefect-{_prefect_version()}.db").resolve()
        if not template.exists():
            template.parent.mkdir(parents=True, exist_ok=True)
            partial = template.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            env = os.environ | {
                "PREFECT_HOME": str(template.parent),
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{partial}",
            }
            prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
            with (self.logs_dir / "prefect-migrate.log").open("ab") as log:
                subprocess.run(
                    [prefect, "server", "database", "upgrade", "-y"],
                    env=env, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=600,
                )  # fmt: skip
            partial.rename(template)
        return template

    def _spawn_prefect(self) -> None:
        port = self.prefect_port or free_port()
        home = Path(self.env_prefect_home)
        home.mkdir(parents=True, exist_ok=True)
        if self.fresh_prefect:
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            shutil.copyfile(self._migrated_template(), home / "prefect.db")
            self._migrated_marker().write_text(_prefect_version())
        marker = self._migrated_marker()
        # Checking migrations costs the server ~10 s at every start; do it only for a new database or a
        # new Prefect version.
        migrated = marker.exists() and marker.read_text() == _prefect_version()
        env = {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": "",
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false" if migrated else "true",
        }
        prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
        argv = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        self._spawn("prefect-server", argv, port, env)

    def apply(self) -> None:
        """Put ``env`` into this process's environment (flow runs inherit it) and refresh Prefect's
        settings if Prefect is already imported."""
        os.environ.update(self.env)
        if "prefect.context" in sys.modules:
            from prefect.context import refresh_global_settings_context

            refresh_global_settings_context()

    def stop(self) -> None:
        """Stop every subprocess started here, newest first (SIGTERM to its session, then SIGKILL)."""
        while self._processes:
            name, process, log = self._processes.pop()
            stop_process(process)
            log.close()
            if name == "prefect-server":
                self._api_url_file().unlink(missing_ok=True)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def running_local_api(state_dir: Path = STATE_DIR, port: int | None = None) -> str | None:
    """The API URL of the embedded Prefect server `recipes serve` runs from ``state_dir``, when it answers:
    the URL it wrote into its Prefect home, else Prefect's usual port (``port``, default PREFECT_PORT)."""
    return api_served_from(state_dir / PREFECT_HOME.name) or next(
        (url for url in [f"http://127.0.0.1:{port or PREFECT_PORT}/api"] if _healthy(url)), None
    )


def api_served_from(prefect_home: Path) -> str | None:
    """The API URL an embedded Prefect server running on ``prefect_home`` wrote there, when it answers."""
    written = prefect_home / API_URL_FILE
    url = written.read_text().strip() if written.is_file() else ""
    return url if url and _healthy(url) else None


def _healthy(api_url: str) -> bool:
    """Whether the Prefect API at ``api_url`` answers its health check."""
    try:
        return httpx.get(api_url + "/health", timeout=2).is_success
    except httpx.HTTPError:
        return False


def _prefect_version() -> str:
    from importlib.metadata import version

    return version("prefect")
