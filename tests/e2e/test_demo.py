"""`recipes demo` (the README's main command) as a user runs it: exit 0, a summary, no raw email; with
`--keep` its Prefect UI stays up until SIGTERM or Ctrl-C, nothing is left running after, and `recipes
serve --embedded` shows the demo's runs from the same Prefect database."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from typing import Any

import httpx
import pytest

from dev.processes import BIN, PROJECT, answers, wait_for
from iterable_recipes.cli.local_stack import PREFECT_HOME, api_served_from, free_port

KEPT = "— Ctrl-C to stop"


class Output:
    """A process's output, read on a thread as it comes (the kept demo does not end by itself)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def finish(self) -> str:
        self._thread.join(timeout=30)
        return self.text


def _start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """``argv`` in the checkout, in a session of its own (as a terminal's foreground job is)."""
    return subprocess.Popen(
        argv,
        cwd=PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def _flow_runs(api: str) -> dict[str, str]:
    """Every flow run the Prefect API at ``api`` holds: id -> its flow's name."""
    runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 200}, timeout=10).json()
    flows = httpx.post(f"{api}/flows/filter", json={}, timeout=10).json()
    names = {flow["id"]: flow["name"] for flow in flows}
    return {run["id"]: names.get(run["flow_id"], "?") for run in runs}


def test_demo_runs_the_three_recipes_keeps_its_ui_and_serve_shows_its_runs():
    env_drop = ("PREFECT_API_URL", "ITERABLE_API_KEY", "RECIPES_DATABASE_URL")
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    demo = _start([str(BIN / "recipes"), "demo", "--keep"], env)
    try:
        output = Output(demo)
        wait_for("the kept demo", lambda: KEPT in output.text or demo.poll() is not None, timeout=400)
        out = output.text
        assert demo.poll() is None, out
        ui = re.search(rf"Prefect UI: (http://127\.0\.0\.1:\d+) {KEPT}", out)
        assert ui, out
        parts = re.findall(r"stand-in at (http://127\.0\.0\.1:\d+)", out)
        assert len(parts) == 2, out
        page = httpx.get(ui[1] + "/runs", headers={"accept": "text/html"}, timeout=10)
        assert page.is_success and "<html" in page.text.lower(), page.text[:500]  # the UI's own page
        demo_runs = _flow_runs(ui[1] + "/api")
        recipes = {"customersdot-events", "marketo-unsubscribe-poll", "snowflake-sync"}
        assert recipes <= set(demo_runs.values()), demo_runs

        demo.send_signal(signal.SIGTERM)  # to `recipes` alone: it passes it on to the demo program
        assert demo.wait(timeout=120) == 0, output.finish()
    finally:
        _end(demo)
    out = output.finish()
    assert re.search(r"customersdot-drain \(\d nudged\) +│ Completed .*delivered 6", out), out
    assert "marketo-unsubscribe-poll" in out and "lead 1: opted_out" in out
    assert "changed 25 rows of the model" in out and "gitlab-marketing-contacts #2: Completed" in out
    assert re.search(r"changed 25, to_send 25", out), out
    assert "@example.com" not in out
    logs = PROJECT / ".recipes" / "demo" / "logs"
    for log in logs.glob("*.log"):
        assert "@example.com" not in log.read_text(errors="replace"), log.name
    # Nothing of the stack is left: the Prefect server (its UI) and the stand-ins answer no more.
    for url in [ui[1] + "/api/health", *(p + "/_sandbox/stats" for p in parts)]:
        assert not _answers(url), f"{url} still answers after the demo ended"
    assert api_served_from(PROJECT / PREFECT_HOME) is None

    serve = _start([str(BIN / "recipes"), "serve", "--embedded", "--port", str(free_port())], env)
    try:
        served = Output(serve)
        api = wait_for(
            "serve --embedded's Prefect server",
            lambda: api_served_from(PROJECT / PREFECT_HOME) or (serve.poll() is not None and "exited"),
            timeout=300,
        )
        assert api != "exited", served.text
        # The same Prefect database: every run of the demo is there.
        assert set(demo_runs) <= set(_flow_runs(api)), served.text
        # The demo ran with the schedules off and switched them back: serve keeps the flags it finds.
        deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
        flags = {(d["name"], s["slug"]): s["active"] for d in deployments for s in d["schedules"]}
        assert flags and all(flags.values()), flags
        os.killpg(serve.pid, signal.SIGINT)  # Ctrl-C, as a terminal sends it to its foreground job
        try:
            serve.wait(timeout=120)
        except subprocess.TimeoutExpired:
            _print_stacks_of_children(serve.pid)
            pytest.fail(f"serve still ran 120 s after Ctrl-C; it printed:\n{served.text[-12000:]}")
    finally:
        _end(serve)
    served.finish()
    assert not _answers(api + "/health"), "serve's Prefect server still answers after serve ended"


def _print_stacks_of_children(pid: int) -> None:
    """Have the serve program under the ``recipes`` wrapper ``pid`` print its threads' stacks (SIGUSR1),
    into the output the test shows."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for child in children:
        os.kill(int(child), signal.SIGUSR1)
    time.sleep(3)


def _end(process: subprocess.Popen[str]) -> None:
    """After a failure: SIGTERM first, so the program stops the parts it started; SIGKILL if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        return answers(url)
    except httpx.HTTPError:
        return False
