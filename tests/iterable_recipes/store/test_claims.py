from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from iterable_recipes.store import Inbox, NewItem

ROOT = Path(__file__).resolve().parents[3]

CLAIMER = """
import sys, time
from iterable_recipes.store import Inbox
store = Inbox(sys.argv[1])
items = store.claim("customersdot", 5, float(sys.argv[2]), "doomed-drain")
print(" ".join(str(i.id) for i in items), flush=True)
time.sleep(60)
"""


def test_two_claimers_at_once_on_postgres_never_hold_the_same_item(migrated_postgres: str) -> None:
    store = Inbox(migrated_postgres)
    source = f"race-{time.monotonic_ns()}"
    store.add_many([NewItem(source, f"e{i}", "k", {}) for i in range(400)])
    held: dict[str, list[int]] = {"a": [], "b": []}
    start = threading.Barrier(2)

    def drain(owner: str) -> None:
        own = Inbox(migrated_postgres)
        start.wait()
        while batch := own.claim(source, 7, 60, owner):
            held[owner].extend(i.id for i in batch)
        own.dispose()

    threads = [threading.Thread(target=drain, args=(o,)) for o in held]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not set(held["a"]) & set(held["b"]), "an item was leased to both claimers"
    assert len(held["a"]) + len(held["b"]) == 400
    assert held["a"] and held["b"], "both claimers should have taken part"
    store.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_items_of_a_killed_claimer_are_claimed_again_after_the_lease(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        from iterable_recipes.store import migrate

        url = f"sqlite:///{tmp_path}/recipes.db"
        migrate(url)
    else:
        url = request.getfixturevalue("migrated_postgres")
    store = Inbox(url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM received_events WHERE source = 'customersdot'")
    ids = [r.id for r in store.add_many([NewItem("customersdot", f"k{i}", "k", {}) for i in range(8)])]
    lease = 1.5
    proc = subprocess.Popen(
        [sys.executable, "-c", CLAIMER, url, str(lease)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        taken = sorted(int(x) for x in line.split())
        assert taken == ids[:5]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    now = store.claim("customersdot", 10, 60, "survivor")
    assert sorted(i.id for i in now) == ids[5:], "leased items stay with the killed drain until expiry"
    deadline = time.monotonic() + 10
    again: list[int] = []
    while time.monotonic() < deadline and len(again) < 5:
        again += [i.id for i in store.claim("customersdot", 10, 60, "survivor")]
        time.sleep(0.1)
    assert sorted(again) == taken
    settled = [store.get(i) for i in taken]
    assert all(item is not None and item.attempts == 2 for item in settled)
    store.dispose()
