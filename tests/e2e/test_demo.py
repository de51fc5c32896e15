"""`recipes demo` (the README's main command) as a user runs it: exit 0, a summary, no raw email."""

from __future__ import annotations

import re
import subprocess

from dev.processes import BIN, PROJECT


def test_demo_runs_the_three_recipes_and_prints_a_summary():
    env_drop = ("PREFECT_API_URL", "ITERABLE_API_KEY", "RECIPES_DATABASE_URL")
    env = {k: v for k, v in __import__("os").environ.items() if k not in env_drop}
    done = subprocess.run(
        [str(BIN / "recipes"), "demo"], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert re.search(r"customersdot-drain \(\d nudged\) +│ Completed .*delivered 6", out), out
    assert "marketo-unsubscribe-poll" in out and "lead 1: opted_out" in out
    assert "changed 25 rows of the model" in out and "gitlab-marketing-contacts #2: Completed" in out
    assert re.search(r"changed 25, to_send 25", out), out
    assert "Prefect UI: http://127.0.0.1:" in out
    assert "@example.com" not in out
    logs = PROJECT / ".recipes" / "demo" / "logs"
    for log in logs.glob("*.log"):
        assert "@example.com" not in log.read_text(errors="replace"), log.name
