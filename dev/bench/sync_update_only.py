"""Recipe 3 bench: an update-only first sync (keyed by email) beside the same sync in upsert mode.

    uv run python -m dev.bench.sync_update_only [--rows 100000] [--existing 0.9] [--export-threshold N]

fakesnow (server mode), the Iterable stand-in with Iterable's limits and a temporary Prefect server each
run in their own process; each sync is the real ``snowflake_sync`` flow run in a fresh subprocess (the
child of ``dev.bench.sync_throughput``), both over one model of ``--rows`` rows, a share ``--existing`` of
whose people are in Iterable. The shipped definition (``mode: update``) runs first: it checks its people
exist (one user export above ``SYNC_EXPORT_THRESHOLD``, getByEmail below), sends the existing ones and
creates nobody. The stand-in is then reset to the same people and the upsert twin sends every row.
``update_only_vs_upsert`` is the update-only run's end-to-end time over the upsert run's (goal: <= 1.2).
Prints a table, then one JSON line. Figures only; nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import yaml

from dev.bench.common import (
    fakesnow_server,
    iterable_standin,
    prefect_server,
    print_json_line,
    print_table,
    run_json,
)
from dev.bench.sync_throughput import SHIPPED, SYNC, connect, sync_child_env, write_upsert_twin

UPDATE = yaml.safe_load(SHIPPED.read_text())["name"]
SEED_CHUNK = 10_000


def model_emails(port: int, rows: int) -> list[str]:
    """Seed the model with ``rows`` rows; return its addresses as the sync keys them, in order."""
    from dev.warehouse import MODEL_TABLE, seed_model

    conn = connect(port)
    try:
        seed_model(conn, rows)
        cur = conn.cursor()
        cur.execute(f"SELECT LOWER(EMAIL_ADDRESS) FROM {MODEL_TABLE} ORDER BY 1")
        return [str(row[0]) for row in cur.fetchall()]
    finally:
        conn.close()


def seed_iterable(url: str, emails: list[str]) -> None:
    """Reset the stand-in, then create ``emails`` in it as people already in Iterable."""
    httpx.post(f"{url}/_sandbox/reset", timeout=60).raise_for_status()
    for low in range(0, len(emails), SEED_CHUNK):
        chunk = [{"email": e} for e in emails[low : low + SEED_CHUNK]]
        httpx.post(f"{url}/_sandbox/users", json=chunk, timeout=120).raise_for_status()


def requests_of(url: str) -> dict[str, int]:
    """The stand-in's requests so far, summed over statuses, by endpoint."""
    stats = httpx.get(f"{url}/_sandbox/stats", timeout=30).json()
    return {endpoint: sum(by_status.values()) for endpoint, by_status in stats["requests"].items()}


def run_sync(sync: str, env: dict[str, str]) -> dict[str, Any]:
    """One sync run in a fresh subprocess; returns its figures."""
    return run_json([sys.executable, "-m", "dev.bench.sync_throughput", "--child", sync], env=env)


def main(argv: list[str] | None = None) -> None:
    """Start the stand-ins, run the update-only and the upsert first sync side by side; print."""
    parser = argparse.ArgumentParser(prog="python -m dev.bench.sync_update_only", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--existing", type=float, default=0.9, help="share of the model in Iterable")
    parser.add_argument(
        "--export-threshold", type=int, default=None, help="SYNC_EXPORT_THRESHOLD (default: settings')"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-update-only-") as tmp:
        folder = Path(tmp)
        write_upsert_twin(folder / "syncs")
        (folder / "syncs" / SHIPPED.name).write_text(SHIPPED.read_text())
        with (
            prefect_server(folder / "prefect") as api_url,
            fakesnow_server() as snow,
            iterable_standin() as iterable,
        ):
            env = sync_child_env(folder, api_url, snow.port, iterable.url) | {
                "ITERABLE_LIMITS_ENABLED": "true"
            }
            if args.export_threshold is not None:
                env["SYNC_EXPORT_THRESHOLD"] = str(args.export_threshold)
            emails = model_emails(snow.port, args.rows)
            existing = emails[: round(len(emails) * args.existing)]

            seed_iterable(iterable.url, existing)
            update = run_sync(
                UPDATE,
                env | {"SNOWFLAKE_STATE_SCHEMA": "BENCH_UPDATE", "LIMITER_SQLITE_PATH": str(folder / "l1")},
            )
            update_requests = requests_of(iterable.url)
            update_users = httpx.get(f"{iterable.url}/_sandbox/stats", timeout=30).json()["users"]

            seed_iterable(iterable.url, existing)
            upsert = run_sync(
                SYNC,
                env | {"SNOWFLAKE_STATE_SCHEMA": "BENCH_UPSERT", "LIMITER_SQLITE_PATH": str(folder / "l2")},
            )

    ratio = update["flow_s"] / upsert["flow_s"]
    figures: dict[str, Any] = {
        "bench": "sync_update_only",
        "cpu_count": os.cpu_count(),
        "rows": args.rows,
        "existing_in_iterable": len(existing),
        "update_only_rows_sent": update["rows_sent"],
        "update_only_flow_s": round(update["flow_s"], 2),
        "update_only_send_s": round(update["send_s"], 2),
        "update_only_getbyemail_requests": update_requests.get("users/getByEmail", 0),
        "update_only_export_requests": update_requests.get("export/data.json", 0),
        "update_only_users_created": update_users - len(existing),
        "upsert_rows_sent": upsert["rows_sent"],
        "upsert_flow_s": round(upsert["flow_s"], 2),
        "upsert_send_s": round(upsert["send_s"], 2),
        "update_only_vs_upsert": round(ratio, 3),
        "update_only_timers": update["timers"],
        "upsert_timers": upsert["timers"],
    }
    print_table(
        [
            (f"rows in the model ({len(existing):,} in Iterable)", args.rows),
            ("update-only: rows sent", update["rows_sent"]),
            ("update-only: users created (goal 0)", figures["update_only_users_created"]),
            ("update-only: getByEmail requests", figures["update_only_getbyemail_requests"]),
            ("update-only: export requests", figures["update_only_export_requests"]),
            ("update-only: end to end, s", update["flow_s"]),
            ("upsert: rows sent", upsert["rows_sent"]),
            ("upsert: end to end, s", upsert["flow_s"]),
            ("update-only / upsert time (goal <= 1.2)", ratio),
        ]
    )
    print_json_line(figures)


if __name__ == "__main__":
    main()
