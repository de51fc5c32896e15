"""The reliability soak at its small size (CI): 500 events, 5,000 rows, 50 unsubscribes, a 10 s outage,
one SIGKILL of the worker and its flow-run processes.

The full size is run by hand: `uv run python -m tests.soak.soak --size full`.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.processes import BIN, PROJECT


@pytest.mark.timeout(1200)
def test_soak_small(postgres_url: str, redis_url: str) -> None:
    # The fixtures only prove PostgreSQL and Redis are there (skip outside CI, fail under CI=true);
    # the soak makes databases and a key prefix of its own.
    done = subprocess.run(
        [str(BIN / "python"), "-m", "tests.soak.soak", "--size", "small"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=1100,
        check=False,
    )
    output = done.stdout + done.stderr
    print(output)
    assert done.returncode == 0, output[-6000:]
    assert "SOAK PASSED" in output
    assert "@example.com" not in output
