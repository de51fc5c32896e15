"""The reliability soak at its small size (`make soak`, run by CI after the suite): 500 events,
5,000 rows, 50 unsubscribes, a 10 s outage, one SIGKILL of the worker and its flow-run processes.

The soak was started when collection finished (tests/soak/conftest.py); this test waits for it.
The full size is run by hand: `uv run python -m dev.soak --size full`.
"""

from __future__ import annotations

import pytest

from tests.soak.conftest import BackgroundSoak


@pytest.mark.timeout(1200)
def test_soak_small(postgres_url: str, redis_url: str, background_soak: BackgroundSoak) -> None:
    # The fixtures only prove PostgreSQL and Redis are there (skip outside CI, fail under CI=true);
    # the soak makes databases and a key prefix of its own.
    code, output = background_soak.result(timeout=1100)
    print(output)
    assert code == 0, output[-6000:]
    assert "SOAK PASSED" in output
    assert "@example.com" not in output
