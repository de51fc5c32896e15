"""The drain and sync throughput benches run for real at tiny sizes and print the ratio figures
`recipes bench` judges (drain_share, the sync's share and its bare reference, CPU per unit)."""

from __future__ import annotations

import sys
from typing import Any

import dev.bench.run_all as bench_cli
from dev.bench.common import last_json_line


def run(name: str, *flags: str) -> dict[str, Any]:
    """``python -m dev.bench.<name> flags`` as `recipes bench` runs it; its last JSON line."""
    code, stdout, stderr = bench_cli.run_process([sys.executable, "-m", f"dev.bench.{name}", *flags], 600)
    assert code == 0, (stderr or stdout)[-2000:]
    return last_json_line(stdout)


def test_the_drain_bench_prints_its_share_and_cpu_per_event() -> None:
    """A 2,000-event backlog through the real flow (Prefect server, stand-in with Iterable's limits):
    every event is delivered, and the share and CPU figures are top-level numbers run_all reads."""
    data = run("drain", "--events", "2000")
    assert data["delivered"] == 2000 and data["inbox_after"] == {"delivered": 2000}
    for key in ("drain_share", "cpu_us_per_drained_event", "drain_events_per_s", "drain_share_end_to_end"):
        value = data[key]
        assert isinstance(value, float) and value > 0, key
    # The share is the phase's rate over the ceiling; the run's own start makes end to end lower.
    assert data["drain_share"] == round(data["drain_events_per_s"] / 5000, 3)
    assert data["drain_share_end_to_end"] <= data["drain_share"]
    figures = bench_cli._drain(data)
    assert figures["drain_share"] == data["drain_share"]
    assert figures["cpu_us_per_drained_event"] == data["cpu_us_per_drained_event"]


def test_the_sync_bench_prints_its_share_its_bare_reference_and_cpu_per_row() -> None:
    """The throughput bench at 300 limited and 6,000 first-sync rows: both syncs send every row, the bare
    script reads and posts the same rows to the same stand-in, and the ratios are top-level numbers."""
    tiny = ["--rows-limited", "300", "--rows-unlimited", "6000", "--baseline-rows", "20"]
    tiny += ["--baseline-seconds", "1"]
    data = run("sync_throughput", *tiny)
    assert data["sync_rows_sent_limited"] == 300 and data["sync_rows_sent_unlimited"] == 6000
    # Six bulkUpdates in well under a second: the stand-in answers 429 unless its limits are off again.
    assert data["sync_bare_rows"] == 6000
    for key in ("sync_limited_share", "sync_vs_bare", "sync_bare_rows_per_s", "cpu_us_per_synced_row"):
        value = data[key]
        assert isinstance(value, float) and value > 0, key
    assert data["sync_vs_bare"] == round(data["sync_rows_per_s_unlimited"] / data["sync_bare_rows_per_s"], 3)
    figures = bench_cli._sync_throughput(data)
    for key in ("sync_limited_share", "sync_vs_bare", "sync_bare_rows_per_s", "cpu_us_per_synced_row"):
        assert figures[key] == data[key], key


def test_the_bare_script_posts_every_row_it_reads() -> None:
    """dev/bench/sync_bare.py against fakesnow and the stand-in: each row read is one profile accepted."""
    from dev.bench.common import fakesnow_server, iterable_standin
    from dev.bench.sync_throughput import connect, run_bare
    from dev.warehouse import seed_model

    with fakesnow_server() as snow, iterable_standin(limits=False) as iterable:
        conn = connect(snow.port)
        try:
            seed_model(conn, 2500)
        finally:
            conn.close()
        figures = run_bare(snow.port, iterable.url)
    assert figures["bare_rows"] == 2500 and figures["bare_accepted"] == 2500
    assert figures["bare_requests"] == 3  # 1000-row batches
    assert isinstance(figures["bare_rows_per_s"], float) and figures["bare_rows_per_s"] > 0
