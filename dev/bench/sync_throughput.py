"""Recipe 3 bench: rows/s the Snowflake sync delivers to Iterable, its per-row baseline, and its peak RSS.

    uv run python -m dev.bench.sync_throughput [--rows-limited 100000] [--rows-unlimited 1000000]
                                           [--baseline-rows 10000] [--baseline-seconds 20] [--in-flight 4]

fakesnow (server mode), the Iterable stand-in and a temporary Prefect server each run in their own
process; every sync is the real ``snowflake_sync`` flow run in a fresh subprocess (its ru_maxrss is the
sync's peak RSS), on an upsert twin of the shipped definition written to a temporary SYNC_DEFINITIONS_DIR.
1. limited: ``--rows-limited`` changed rows with Iterable's limits on both sides (ceiling: bulkUpdate
   5 req/s x 1000 = 5,000 rows/s), and the same rows sent one users/update per row (a Workato recipe's
   way; 500 req/s) for ``--baseline-rows`` rows or ``--baseline-seconds``, whichever ends first;
2. unlimited: a first full sync of ``--rows-unlimited`` rows, limits off on both sides (our overhead),
   then its reference side by side: ``dev.bench.sync_bare`` reads the same rows from the same
   warehouse and posts them in 1000-row batches to the same (emptied) stand-in with one httpx client
   (``sync_vs_bare`` = the sync's send-phase rows/s over the bare script's rows/s).
The sync share is its send phase's rows/s over the ceiling (``sync_limited_share``); CPU per synced
row is the sync process's own CPU clock (user + system, ``time.process_time``) over the flow run,
divided by the rows it sent. Prints a table, then one JSON line. Figures only; nothing here asserts
a timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from dev.bench.common import (
    FAKESNOW_LOGIN,
    SANDBOX_ITERABLE_KEY,
    fakesnow_server,
    iterable_standin,
    peak_rss_mb,
    prefect_server,
    print_json_line,
    print_table,
    run_json,
)
from iterable_recipes.sync.definitions import SYNCS_DIR

SHIPPED = SYNCS_DIR / "gitlab_marketing_contacts.yaml"
SYNC = "gitlab_marketing_contacts_upsert"
DATABASE, SCHEMA = "BENCH", "PUBLIC"
CEILING = 5000.0


def write_upsert_twin(folder: Path) -> Path:
    """The shipped definition with ``mode: upsert`` under another name, alone in ``folder``."""
    document = yaml.safe_load(SHIPPED.read_text())
    document |= {"name": SYNC, "mode": "upsert", "description": "Bench: upsert twin of the shipped sync."}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{SYNC}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def connect(port: int) -> Any:
    """A connection to the fakesnow server on ``port``."""
    from iterable_recipes.sync import connect as warehouse_connect

    return warehouse_connect(
        **FAKESNOW_LOGIN, host="127.0.0.1", port=port, protocol="http", database=DATABASE, schema=SCHEMA,
        session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False}, network_timeout=900,
    )  # fmt: skip


# --- the child: one sync run, instrumented ---------------------------------------------------------


def _timed(timers: defaultdict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timers[name] += time.perf_counter() - began

    return wrapper


def child(sync: str) -> None:
    """Run ``snowflake_sync(sync)`` once in this process; print its counts, timings and peak RSS."""
    import flows.snowflake_sync as flow_module
    import iterable_recipes.sync.delivery as delivery
    import tasks.warehouse as task_module

    timers: defaultdict[str, float] = defaultdict(float)
    lock = threading.Lock()
    send_bulk = delivery.send_in_batches

    def timed_send_bulk(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return send_bulk(*args, **kwargs)
        finally:
            with lock:
                timers["http_bulk_update_s (summed over threads)"] += time.perf_counter() - began

    def timed_batches(*args: Any, **kwargs: Any) -> Iterator[Any]:
        batches = original_batches(*args, **kwargs)
        timers["send_started_at"] = time.perf_counter()
        while True:
            began = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                timers["read_batches_s"] += time.perf_counter() - began
                return
            timers["read_batches_s"] += time.perf_counter() - began
            yield batch

    def timed_accept(*args: Any, **kwargs: Any) -> Any:
        result = accept(*args, **kwargs)
        timers["last_accept_at"] = time.perf_counter()
        return result

    original_batches = delivery.iter_batches
    accept = _timed(timers, "accept_batch_s", delivery.accept_batch)
    delivery.send_in_batches = timed_send_bulk
    delivery.iter_batches = timed_batches
    delivery.accept_batch = timed_accept
    task_module.plan_run = _timed(timers, "plan_s", task_module.plan_run)
    task_module.finish_run = _timed(timers, "finish_run_s", task_module.finish_run)
    task_module.check_existence = _timed(timers, "existence_check_s", task_module.check_existence)
    sender = flow_module.sync_batch_sender

    def timed_sender(resources: Any, defn: Any, batches: int, verified: bool = False) -> Callable[..., Any]:
        send = sender(resources, defn, batches, verified)

        def timed(batch_no: int, items: Any) -> Any:
            timers.setdefault("first_submit_at", time.perf_counter())
            return send(batch_no, items)

        return timed

    flow_module.sync_batch_sender = timed_sender

    began = time.perf_counter()
    cpu_began = time.process_time()  # this process's own CPU clock: user + system, every thread
    summary = flow_module.snowflake_sync(sync)
    cpu = time.process_time() - cpu_began
    total = time.perf_counter() - began
    send_s = timers.pop("last_accept_at", began) - timers.pop("send_started_at", began)
    timers.pop("first_submit_at", None)
    accounted = sum(v for k, v in timers.items() if not k.startswith("http_"))
    timers["waiting_for_batches_s"] = max(0.0, send_s - sum(
        timers.get(k, 0.0) for k in ("read_batches_s", "accept_batch_s")))  # fmt: skip
    timers["flow_start_and_other_s"] = max(0.0, total - accounted - timers["waiting_for_batches_s"])
    print_json_line(
        {
            "rows_sent": int(summary.get("rows_sent", 0)),
            "to_send": int(summary.get("to_send", 0)),
            "failed_batches": int(summary.get("failed_batches", 0)),
            "flow_s": total,
            "cpu_s": cpu,
            "send_s": send_s,
            "timers": {k: round(v, 3) for k, v in timers.items()},
            "peak_rss_mb": peak_rss_mb(),
        }
    )


# --- the parent: stand-ins, seeding, runs ---------------------------------------------------------


def run_sync(env: dict[str, str]) -> dict[str, Any]:
    """One sync in a fresh subprocess (``--child``); returns its figures."""
    return run_json([sys.executable, "-m", "dev.bench.sync_throughput", "--child", SYNC], env=env)


def run_bare(snowflake_port: int, iterable_url: str) -> dict[str, Any]:
    """``dev.bench.sync_bare`` in a fresh subprocess against the same warehouse and stand-in."""
    argv = [sys.executable, "-m", "dev.bench.sync_bare", "--snowflake-port", str(snowflake_port)]
    return run_json([*argv, "--iterable-url", iterable_url, "--database", DATABASE, "--schema", SCHEMA])


def seed_changed(port: int, rows: int, state_schema: str, definitions: Path) -> int:
    """Seed ``rows`` rows, accept them all as already synced, then change every row: ``rows`` changed."""
    from dev.warehouse import mutate, seed_model
    from iterable_recipes.sync import accept_all, ensure_state, finish_run, plan_changes
    from iterable_recipes.sync.definitions import all_sync_definitions

    defn = all_sync_definitions(definitions)[SYNC]
    conn = connect(port)
    try:
        seed_model(conn, rows)
        ensure_state(conn, state_schema)
        plan_changes(conn, defn, "bench_seed", state_schema=state_schema)
        accept_all(conn, defn, "bench_seed", state_schema=state_schema)
        finish_run(conn, defn, "bench_seed", state_schema=state_schema)
        return int(mutate(conn, 1.0, seed=7))
    finally:
        conn.close()


def baseline_items(port: int, count: int, definitions: Path) -> list[dict[str, Any]]:
    """The first ``count`` items the sync sends (read through a plan under a state schema of its own)."""
    from iterable_recipes.sync import ensure_state, iter_batches, plan_changes
    from iterable_recipes.sync.definitions import all_sync_definitions

    defn = all_sync_definitions(definitions)[SYNC]
    conn = connect(port)
    items: list[dict[str, Any]] = []
    try:
        ensure_state(conn, "BENCH_BASELINE")
        plan_changes(conn, defn, "bench_baseline", state_schema="BENCH_BASELINE")
        for batch in iter_batches(conn, defn, "bench_baseline", state_schema="BENCH_BASELINE"):
            items.extend(batch.items)
            if len(items) >= count:
                break
    finally:
        conn.close()
    return items[:count]


def _pause(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After") or 1.0))
    except ValueError:
        return 1.0


def per_row_baseline(
    url: str, items: list[dict[str, Any]], seconds: float, limiter_path: str
) -> dict[str, float]:
    """POST /api/users/update once per row with plain httpx (a Workato recipe's way, not our client).

    Iterable's 500/s for users/update is held by a SQLite limiter as the project's shared one would;
    8 threads; a 429 or 5xx is sent again after a pause (Retry-After, else 1 s), at most 4 times.
    """
    from iterable_recipes.clients.limiter import Rate
    from iterable_recipes.clients.shared_limiters import SQLiteLimiter
    from iterable_recipes.settings import Settings

    name = "users/update"
    settings = Settings()
    seconds_per_window = 1 / settings.iterable_rate_share + settings.iterable_rate_margin_seconds
    limiter = SQLiteLimiter(limiter_path, {name: Rate(500, seconds_per_window)})
    rows = iter(items)
    lock = threading.Lock()
    done = [0] * 8
    refused = [0] * 8
    stop = time.monotonic() + seconds
    http = httpx.Client(
        base_url=url,
        headers={"Api-Key": SANDBOX_ITERABLE_KEY, "Accept": "application/json"},
        timeout=30,
        limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
    )
    with http, limiter:

        def loop(n: int) -> None:
            while time.monotonic() < stop:
                with lock:
                    item = next(rows, None)
                if item is None:
                    return
                for _ in range(4):
                    limiter.acquire(name)
                    response = http.post("/api/users/update", json=item)
                    if response.status_code != 429 and response.status_code < 500:
                        break
                    limiter.slow_down(name, _pause(response))
                if response.is_success:
                    done[n] += 1
                else:
                    refused[n] += 1

        began = time.monotonic()
        threads = [threading.Thread(target=loop, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - began
    return {
        "rows": float(sum(done)),
        "refused": float(sum(refused)),
        "seconds": elapsed,
        "rows_per_s": sum(done) / elapsed,
    }


def sync_child_env(folder: Path, api_url: str, snowflake_port: int, iterable_url: str) -> dict[str, str]:
    """The settings of a benchmark's sync process: the Prefect server, fakesnow served on
    ``snowflake_port``, the stand-in, the definitions in ``folder / "syncs"``, a SQLite limiter and an
    app database in ``folder``, migrated here (every profile write's consent gate reads its ledger)."""
    env = {
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(folder / "prefect"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "SNOWFLAKE_ACCOUNT": FAKESNOW_LOGIN["account"],
        "SNOWFLAKE_USER": FAKESNOW_LOGIN["user"],
        "SNOWFLAKE_PASSWORD": FAKESNOW_LOGIN["password"],
        "SNOWFLAKE_DATABASE": DATABASE,
        "SNOWFLAKE_SCHEMA": SCHEMA,
        "SNOWFLAKE_HOST": "127.0.0.1",
        "SNOWFLAKE_PORT": str(snowflake_port),
        "SNOWFLAKE_PROTOCOL": "http",
        "SYNC_DEFINITIONS_DIR": str(folder / "syncs"),
        "ITERABLE_API_KEY": SANDBOX_ITERABLE_KEY,
        "ITERABLE_BASE_URL": iterable_url,
        "LIMITER_BACKEND": "sqlite",
        "RECIPES_DATABASE_URL": f"sqlite:///{folder / 'recipes.db'}",
    }
    from iterable_recipes.store import migrate

    migrate(env["RECIPES_DATABASE_URL"])
    return env


def main(argv: list[str] | None = None) -> None:
    """Start the stand-ins, run the limited sync, the per-row baseline and the unlimited sync; print."""
    parser = argparse.ArgumentParser(prog="python -m dev.bench.sync_throughput", description=__doc__)
    parser.add_argument("--rows-limited", type=int, default=100_000)
    parser.add_argument("--rows-unlimited", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=10_000)
    parser.add_argument("--baseline-seconds", type=float, default=20.0)
    parser.add_argument(
        "--in-flight", type=int, default=None, help="SYNC_BATCHES_IN_FLIGHT (default: settings')"
    )
    parser.add_argument("--child", metavar="SYNC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return

    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        folder = Path(tmp)
        write_upsert_twin(folder / "syncs")
        limiter_path = str(folder / "limiter.sqlite")
        with (
            prefect_server(folder / "prefect") as api_url,
            fakesnow_server() as snow,
            iterable_standin() as iterable,
        ):
            env = sync_child_env(folder, api_url, snow.port, iterable.url) | {
                "LIMITER_SQLITE_PATH": limiter_path
            }
            if args.in_flight:
                env["SYNC_BATCHES_IN_FLIGHT"] = str(args.in_flight)
            in_flight = int(
                env.get("SYNC_BATCHES_IN_FLIGHT") or os.environ.get("SYNC_BATCHES_IN_FLIGHT", "4")
            )

            changed = seed_changed(snow.port, args.rows_limited, "BENCH_LIMITED", folder / "syncs")
            limited = run_sync(
                env | {"SNOWFLAKE_STATE_SCHEMA": "BENCH_LIMITED", "ITERABLE_LIMITS_ENABLED": "true"}
            )
            items = baseline_items(snow.port, args.baseline_rows, folder / "syncs")
            baseline = per_row_baseline(iterable.url, items, args.baseline_seconds, limiter_path)
            stats = httpx.get(f"{iterable.url}/_sandbox/stats", timeout=30).json()["requests"]

            httpx.post(f"{iterable.url}/_sandbox/reset", timeout=60).raise_for_status()
            httpx.post(f"{iterable.url}/_sandbox/options", json={"limits_enabled": False}, timeout=10)
            conn = connect(snow.port)
            try:
                from dev.warehouse import seed_model

                seed_model(conn, args.rows_unlimited)
            finally:
                conn.close()
            unlimited = run_sync(
                env | {"SNOWFLAKE_STATE_SCHEMA": "BENCH_FULL", "ITERABLE_LIMITS_ENABLED": "false"}
            )
            # The reference, side by side: the same rows from the same warehouse to the same stand-in
            # (emptied again, so it creates the profiles as it did for the sync; a reset turns the
            # limits back on).
            httpx.post(f"{iterable.url}/_sandbox/reset", timeout=60).raise_for_status()
            httpx.post(f"{iterable.url}/_sandbox/options", json={"limits_enabled": False}, timeout=10)
            bare = run_bare(snow.port, iterable.url)

    # Rates as printed (0.1 row/s), and each ratio of the printed rates: dividing the printed figures
    # gives the printed ratio (a ratio of the unrounded rates can round the other way).
    limited_rate = round(limited["rows_sent"] / limited["send_s"], 1)
    unlimited_rate = round(unlimited["rows_sent"] / unlimited["send_s"], 1)
    bare_rate = round(float(bare["bare_rows_per_s"]), 1)
    figures: dict[str, Any] = {
        "bench": "sync_throughput",
        "sync_limited_share": round(limited_rate / CEILING, 3),
        "sync_vs_bare": round(unlimited_rate / bare_rate, 3) if bare_rate else None,
        "sync_bare_rows_per_s": bare_rate,
        "sync_bare_rows": bare["bare_rows"],
        "cpu_us_per_synced_row": round(1e6 * unlimited["cpu_s"] / max(1, unlimited["rows_sent"]), 1),
        "sync_bare_cpu_us_per_row": bare.get("bare_cpu_us_per_row"),
        "cpu_us_per_synced_row_limited": round(1e6 * limited["cpu_s"] / max(1, limited["rows_sent"]), 1),
        "cpu_count": os.cpu_count(),
        "sync_batches_in_flight": in_flight,
        "sync_rows_changed_limited": changed,
        "sync_rows_sent_limited": limited["rows_sent"],
        "sync_rows_per_s_limited": limited_rate,
        "sync_rows_per_s_limited_end_to_end": round(limited["rows_sent"] / limited["flow_s"], 1),
        "sync_ceiling_rows_per_s": CEILING,
        "sync_bulk_update_429": int(stats.get("users/bulkUpdate", {}).get("429", 0)),
        "sync_per_row_baseline_rows_per_s": round(baseline["rows_per_s"], 1),
        "sync_per_row_baseline_rows": int(baseline["rows"]),
        "sync_limited_vs_per_row": round(limited_rate / baseline["rows_per_s"], 2),
        "sync_rows_sent_unlimited": unlimited["rows_sent"],
        "sync_rows_per_s_unlimited": unlimited_rate,
        "sync_rows_per_s_unlimited_end_to_end": round(unlimited["rows_sent"] / unlimited["flow_s"], 1),
        "sync_peak_rss_mb_limited": round(limited["peak_rss_mb"], 1),
        "sync_peak_rss_mb_unlimited": round(unlimited["peak_rss_mb"], 1),
        "sync_peak_rss_mb": round(max(limited["peak_rss_mb"], unlimited["peak_rss_mb"]), 1),
        "sync_timers_limited": limited["timers"],
        "sync_timers_unlimited": unlimited["timers"],
    }
    print_table(
        [
            (
                f"limited: rows sent of {args.rows_limited:,} changed (upsert)",
                figures["sync_rows_sent_limited"],
            ),
            ("limited: rows/s delivered (send phase)", limited_rate),
            ("limited: rows/s end to end (plan, flow start)", figures["sync_rows_per_s_limited_end_to_end"]),
            ("limited: share of the 5,000 rows/s ceiling", figures["sync_limited_share"]),
            ("limited: bulkUpdate 429 answers", figures["sync_bulk_update_429"]),
            ("per-row users/update baseline rows/s", baseline["rows_per_s"]),
            ("bulk sync / per-row baseline", figures["sync_limited_vs_per_row"]),
            (
                f"unlimited: rows sent of {args.rows_unlimited:,} (first sync)",
                figures["sync_rows_sent_unlimited"],
            ),
            ("unlimited: rows/s delivered (send phase)", unlimited_rate),
            ("unlimited: rows/s end to end", figures["sync_rows_per_s_unlimited_end_to_end"]),
            ("bare read-and-post script rows/s (same rows, one client)", bare_rate),
            ("first sync (limits off) / bare script", figures["sync_vs_bare"]),
            ("sync process CPU per synced row, us (first sync)", figures["cpu_us_per_synced_row"]),
            ("bare script CPU per row, us (same rows)", figures["sync_bare_cpu_us_per_row"]),
            ("sync process CPU per synced row, us (limited)", figures["cpu_us_per_synced_row_limited"]),
            (f"peak RSS of the sync process at {args.rows_limited:,} rows, MB", limited["peak_rss_mb"]),
            (f"peak RSS of the sync process at {args.rows_unlimited:,} rows, MB", unlimited["peak_rss_mb"]),
            *((f"  unlimited: {name}", float(value)) for name, value in unlimited["timers"].items()),
        ]
    )
    print_json_line(figures)


if __name__ == "__main__":
    main()
