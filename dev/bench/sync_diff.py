"""Benchmark the warehouse diff: a 1,000,000-row model with 1% changed, fakesnow serving in its own process.

Beside the project's diff (``diff_s``) it times, in the same run and on the same connection, a bare
one-statement CREATE TABLE AS over the same data (``diff_bare_s``): the model joined to a snapshot of
the same rows on the identity column as it is, keeping the rows whose plain hash differs. Their ratio
``diff_vs_bare`` says what the diff's own work costs, whatever the machine's speed; both are run
``--repeats`` times in turns and their medians reported, beside the warehouse process's CPU seconds for
each (``diff_vs_bare_cpu``, which other work on a shared machine barely moves).

Run: ``uv run python -m dev.bench.sync_diff [--rows N] [--fraction F] [--repeats R]``. Prints a table, then
one JSON line. Figures only; nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from dev.bench.common import fakesnow_server, peak_rss_mb
from dev.warehouse import mutate, seed_model
from iterable_recipes.sync import accept_all, connect, ensure_state, finish_run, iter_batches, plan_changes
from iterable_recipes.sync.definitions import SyncDefinition, all_sync_definitions
from iterable_recipes.sync.sql import source_subquery

STATE = "BENCH_STATE"
BARE_SNAPSHOT, BARE_STAGE = f"{STATE}.BARE_SNAPSHOT", f"{STATE}.BARE_STAGE"


def _plain_hash(defn: SyncDefinition) -> str:
    """The hash anyone would write first: MD5 over each mapped value as text, CHR(31) between."""
    return "MD5(" + " || CHR(31) || ".join(f"COALESCE(TO_VARCHAR(M.{c}), '')" for c in defn.columns) + ")"


def _execute(conn: Any, sql: str) -> None:
    cur = conn.cursor()
    try:
        cur.execute(sql)
    finally:
        cur.close()


def bare_snapshot(conn: Any, defn: SyncDefinition) -> None:
    """The bare statement's snapshot: the model's identities as they are, with their plain hash."""
    _execute(
        conn,
        f"""CREATE OR REPLACE TABLE {BARE_SNAPSHOT} AS
        SELECT M.{defn.identity.column} AS IDENTITY, {_plain_hash(defn)} AS ROW_HASH
        FROM {source_subquery(defn)}""",
    )


def bare_diff(conn: Any, defn: SyncDefinition) -> None:
    """One CREATE TABLE AS: the model's rows whose plain hash differs from the bare snapshot's, with
    their identity, hash and mapped values (what a diff must at least do)."""
    values = "".join(f", V.{c}" for c in defn.columns)
    _execute(
        conn,
        f"""CREATE OR REPLACE TABLE {BARE_STAGE} AS
        SELECT V.ID AS IDENTITY, V.H AS ROW_HASH{values}
        FROM (SELECT M.{defn.identity.column} AS ID, {_plain_hash(defn)} AS H, M.*
          FROM {source_subquery(defn)}) V
        JOIN {BARE_SNAPSHOT} S ON S.IDENTITY = V.ID
        WHERE S.ROW_HASH <> V.H""",
    )


def server_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, every thread) the process ``pid`` has used, from /proc; None where
    there is no /proc. Another process's load barely moves it, unlike wall-clock seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _count(conn: Any, table: str) -> int:
    cur = conn.cursor()
    try:
        cur.execute(f"SELECT COUNT(*) FROM {table}")
        return int(cur.fetchone()[0])
    finally:
        cur.close()


def run(rows: int, fraction: float, repeats: int = 3) -> dict[str, Any]:
    """Seed, accept everything once, change ``fraction`` of rows, then time the diff and the bare
    statement ``repeats`` times in turns (the medians are reported) and the read."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    defn = all_sync_definitions()["gitlab_marketing_contacts"]
    with fakesnow_server() as server:
        port = server.port
        conn = connect(
            user="fake", password="snow", account="fakesnow", host="127.0.0.1", port=port, protocol="http",
            session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False}, network_timeout=600,
            database="BENCH", schema="PUBLIC",
        )  # fmt: skip
        t0 = time.perf_counter()
        seed_model(conn, rows)
        ensure_state(conn, STATE)
        seed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        first = plan_changes(conn, defn, "bench-first", state_schema=STATE)
        first_plan_s = time.perf_counter() - t0
        accept_all(conn, defn, "bench-first", state_schema=STATE)
        finish_run(conn, defn, "bench-first", state_schema=STATE)
        bare_snapshot(conn, defn)
        changed = mutate(conn, fraction, seed=1)
        rss_before = peak_rss_mb()
        # Side by side, in turns: a machine busy with other work slows both alike. Re-planning the same
        # run replaces its staging table and changes no state (nothing accepted, nothing departed).
        diff_runs, bare_runs, diff_cpu, bare_cpu = [], [], [], []
        pid = server.process.pid
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), server_cpu_s(pid)
            summary = plan_changes(conn, defn, "bench-diff", state_schema=STATE)
            t1, c1 = time.perf_counter(), server_cpu_s(pid)
            bare_diff(conn, defn)
            t2, c2 = time.perf_counter(), server_cpu_s(pid)
            diff_runs.append(t1 - t0)
            bare_runs.append(t2 - t1)
            if c0 is not None and c1 is not None and c2 is not None:
                diff_cpu.append(c1 - c0)
                bare_cpu.append(c2 - c1)
        diff_s, diff_bare_s = statistics.median(diff_runs), statistics.median(bare_runs)
        # The warehouse's CPU seconds for each (fakesnow's process): the same ratio, without the noise
        # of other work on the machine.
        diff_cpu_s = statistics.median(diff_cpu) if diff_cpu else None
        bare_cpu_s = statistics.median(bare_cpu) if bare_cpu else None
        bare_rows = _count(conn, BARE_STAGE)
        t0 = time.perf_counter()
        fetched = batches = 0
        for batch in iter_batches(conn, defn, "bench-diff", state_schema=STATE, fetch_size=1000):
            fetched += len(batch)
            batches += 1
        read_s = time.perf_counter() - t0
        finish_run(conn, defn, "bench-diff", state_schema=STATE, status="bench")
        conn.close()
    return {
        "rows_in_model": summary.rows_in_model,
        "rows_changed": changed,
        "first_plan_rows": first.to_send,
        "seed_s": round(seed_s, 3),
        "first_plan_s": round(first_plan_s, 3),
        "diff_s": round(diff_s, 3),
        "diff_goal_s": 2.0,
        "diff_bare_s": round(diff_bare_s, 3),
        "diff_vs_bare": round(diff_s / diff_bare_s, 3) if diff_bare_s > 0 else None,
        "diff_cpu_s": round(diff_cpu_s, 3) if diff_cpu_s is not None else None,
        "diff_bare_cpu_s": round(bare_cpu_s, 3) if bare_cpu_s is not None else None,
        "diff_vs_bare_cpu": round(diff_cpu_s / bare_cpu_s, 3) if diff_cpu_s and bare_cpu_s else None,
        "diff_runs_s": [round(x, 3) for x in diff_runs],
        "diff_bare_runs_s": [round(x, 3) for x in bare_runs],
        "bare_rows": bare_rows,
        "staged": summary.to_send,
        "rows_fetched": fetched,
        "fetched_equals_changed": fetched == changed,
        "batches": batches,
        "read_s": round(read_s, 3),
        "reader_peak_rss_mib_before_diff": round(rss_before, 1),
        "reader_peak_rss_mib": round(peak_rss_mb(), 1),
    }


def main() -> None:
    """Parse arguments, run once, print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=3, help="diff and bare runs, in turns (medians)")
    args = parser.parse_args()
    figures = run(args.rows, args.fraction, args.repeats)
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
