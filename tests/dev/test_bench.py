"""dev/bench/run_all.py (what `recipes bench` runs) on canned outputs: parsing, goals, table, JSON line."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import pytest
from rich.console import Console
from typer.testing import CliRunner

import dev.bench.run_all as bench_cli

CANNED: dict[str, dict[str, object]] = {
    "iterable_client": {
        "bench": "iterable_client",
        "overhead": {"rows_per_s": 250000.0},
        "bulk_update_limited": {"users_per_s": 4600.0},
    },
    "limiters": {
        "bench": "limiters",
        "cases": [
            {
                "backend": "sqlite",
                "share_of_ceiling": 0.962,
                "share_of_paced": 0.995,
                "most_in_window": 100,
                "limit_in_window": 100,
            },
            {
                "backend": "sqlite",
                "share_of_ceiling": 0.966,
                "share_of_paced": 0.999,
                "most_in_window": 5,
                "limit_in_window": 5,
            },
        ],
    },
    "webhook_intake": {
        "bench": "webhook_intake",
        "results": [
            {"backend": "sqlite", "events_per_s": 1800.0, "p99_ms": 40.0},
            {"backend": "postgres", "events_per_s": 900.0, "p99_ms": 80.0},
        ],
        "intake_vs_bare": 0.75,
        "intake_p99_ms_at_3000": 22.0,
        "cpu_us_per_webhook": 240.0,
    },
    "drain": {
        "drain_events_per_s": 4400.0,
        "drain_ceiling_events_per_s": 5000,
        "drain_share": 0.88,
        "cpu_us_per_drained_event": 120.0,
        "insert": {"events": 10},
    },
    "sync_diff": {
        "rows_in_model": 1000000,
        "rows_changed": 10000,
        "diff_s": 1.5,
        "diff_bare_s": 1.2,
        "diff_vs_bare": 1.25,
        "rows_fetched": 10000,
    },
    "sync_throughput": {
        "sync_rows_per_s_limited": 1200.0,
        "sync_ceiling_rows_per_s": 5000.0,
        "sync_rows_per_s_unlimited": 2000.0,
        "sync_per_row_baseline_rows_per_s": 400.0,
        "sync_limited_vs_per_row": 3.0,
        "sync_peak_rss_mb": 250.0,
        "sync_limited_share": 0.24,
        "sync_vs_bare": 0.9,
        "cpu_us_per_synced_row": 25.0,
    },
    "sync_update_only": {
        "bench": "sync_update_only",
        "update_only_vs_upsert": 1.1,
        "update_only_flow_s": 33.0,
        "upsert_flow_s": 30.0,
        "update_only_users_created": 0,
    },
    "optout_latency": {
        "optout_p50_seconds": 8.0,
        "optout_p99_seconds": 17.5,
        "poll_unsubscribes_per_s": 40.0,
    },
    "consent_latency": {
        "consent_existing_p50_seconds": 6.0,
        "consent_existing_p99_seconds": 9.0,
        "consent_created_p50_seconds": 22.0,
        "consent_created_p99_seconds": 31.0,
        "consent_events_before_optout": 0,
        "reconciliation_getbyemail_people_per_second": 90.0,
        "reconciliation_export_people_per_second": 20000.0,
    },
}


def canned_runner(failing: Sequence[str] = ()) -> bench_cli.Runner:
    """A runner answering each bench's argv with a table and its canned JSON line (or a failure)."""

    def run(argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
        name = argv[2].removeprefix("dev.bench.")
        if name in failing:
            return 1, "partial table\n", "Traceback ...\nRuntimeError: stand-in did not start"
        return 0, f"a table\nwith figures\n{json.dumps(CANNED[name])}\n", ""

    return run


def results(failing: Sequence[str] = (), quick: bool = True) -> list[bench_cli.BenchResult]:
    runner = canned_runner(failing)
    return [bench_cli.run_bench(b, quick, runner) for b in bench_cli.BENCHES]


def test_every_bench_is_parsed_into_the_flat_figures() -> None:
    figures = bench_cli.aggregate(results())
    assert figures["failed"] == []
    for key in bench_cli.REQUIRED_KEYS:
        assert isinstance(figures[key], int | float), key
    assert figures["webhook_events_per_s"] == 1800.0  # the SQLite backend, not the last one
    assert figures["sync_diff_seconds_1m_rows"] == 1.5
    assert figures["drain_ceiling_events_per_s"] == 5000.0
    assert figures["limiter_sqlite_share_of_ceiling"] == 0.962  # the lowest case
    assert figures["limiter_sqlite_share_of_paced"] == 0.995
    assert figures["limiter_sqlite_over_window_limit"] == 0


def test_goals_pass_and_miss() -> None:
    verdicts = {label: verdict for label, _, _, verdict in bench_cli.verdicts(bench_cli.aggregate(results()))}
    assert verdicts["sync rows/s, Iterable limits on"] == ""  # shown; judged as a share
    assert verdicts["sync rows/s with Iterable's limits / ceiling (100k rows)"] == "miss"  # 0.24 < 0.95
    assert verdicts["first sync, limits off / bare read-and-post script"] == "pass"  # 0.9 >= 0.8
    assert verdicts["diff (1M rows, 1% changed) / bare CREATE TABLE AS"] == "pass"  # 1.25 <= 1.5
    assert verdicts["webhook intake / bare Starlette insert"] == "pass"  # 0.75 >= 0.7
    assert verdicts["sync process CPU per synced row, us"] == "miss"  # 25 > 20
    assert verdicts["drain process CPU per drained event, us"] == "pass"  # 120 <= 150
    assert verdicts["receiver CPU per webhook, us"] == "miss"  # 240 > 200
    assert verdicts["sync process peak RSS, MB"] == "pass"
    assert verdicts["update-only / upsert first sync time (90% in Iterable)"] == "pass"  # 1.1 <= 1.2
    assert verdicts["users an update-only sync created"] == "pass"
    assert verdicts["drain events/s / ceiling (100k backlog)"] == "miss"  # 0.88 < 0.92
    assert verdicts["webhook -> Iterable opt-out p99, s"] == "pass"
    assert verdicts["rows fetched after the diff"] == "pass"
    assert verdicts["bulk sync / per-row baseline"] == "miss"
    assert verdicts["webhook intake p99, ms"] == ""  # no goal
    assert verdicts["same, person created by the chain 10 s later, p99, s"] == "miss"  # 31 > 30
    assert verdicts["custom events out before the opt-out"] == "pass"
    assert verdicts["  / the paced rate (ceiling less margin and share)"] == "pass"  # 0.995 >= 0.99


def test_a_failed_bench_is_reported_not_dropped() -> None:
    done = results(failing=["sync_diff"])
    failed = next(r for r in done if r.name == "sync_diff")
    assert not failed.ok and "exit 1" in (failed.error or "")
    figures = bench_cli.aggregate(done)
    assert figures["failed"] == ["sync_diff"]
    assert figures["sync_diff_seconds_1m_rows"] is None
    verdicts = {label: verdict for label, _, _, verdict in bench_cli.verdicts(figures)}
    assert verdicts["diff (1M rows, 1% changed) / bare CREATE TABLE AS"] == "failed"


def test_output_without_a_json_line_is_a_failure() -> None:
    bench = bench_cli.BENCHES[0]
    result = bench_cli.run_bench(bench, True, lambda argv, timeout: (0, "only a table\n", ""))
    assert result.error == "no JSON line: only a table"


def test_quick_and_full_sizes() -> None:
    seen: list[Sequence[str]] = []

    def run(argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
        seen.append(argv)
        return canned_runner()(argv, timeout)

    sync_diff = next(b for b in bench_cli.BENCHES if b.name == "sync_diff")
    bench_cli.run_bench(sync_diff, True, run)
    bench_cli.run_bench(sync_diff, False, run)
    assert list(seen[0][1:]) == ["-m", "dev.bench.sync_diff", "--rows", "100000"]
    assert list(seen[1][1:]) == ["-m", "dev.bench.sync_diff"]


def test_table_shows_goals_and_failures() -> None:
    done = results(failing=["drain"])
    console = Console(record=True, width=160)
    bench_cli.render(bench_cli.aggregate(done), done, console)
    text = console.export_text()
    assert ">= 0.95" in text and "pass" in text and "miss" in text
    assert "bench.drain" in text and "FAILED" in text


@pytest.fixture
def canned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    failing: list[str] = []
    monkeypatch.setattr(bench_cli, "run_process", lambda argv, timeout: canned_runner(failing)(argv, timeout))
    return failing


def test_json_last_line_holds_every_key(canned: list[str]) -> None:
    result = CliRunner().invoke(bench_cli.app, ["--json", "--quick"])
    assert result.exit_code == 0, result.output
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert isinstance(last, dict)
    for key in bench_cli.REQUIRED_KEYS:
        assert isinstance(last[key], int | float), key
    assert "@" not in result.output


def test_json_with_a_failure_exits_non_zero(canned: list[str]) -> None:
    canned.append("optout_latency")
    result = CliRunner().invoke(bench_cli.app, ["--json", "--quick"])
    assert result.exit_code == 1
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert last["failed"] == ["optout_latency"] and last["optout_p99_seconds"] is None


def test_table_output(canned: list[str]) -> None:
    result = CliRunner().invoke(bench_cli.app, ["--quick", "--only", "sync_diff"])
    assert result.exit_code == 0, result.output
    assert "warehouse diff" in result.output and "bench.sync_diff" in result.output


def test_the_update_only_bench_runs_at_a_tiny_size() -> None:
    """dev/bench/sync_update_only.py for real (a Prefect server, fakesnow, the stand-in with Iterable's
    limits) at 300 rows, the user export forced: both syncs run and it reports the ratio."""
    bench = next(b for b in bench_cli.BENCHES if b.name == "sync_update_only")
    tiny = dataclasses.replace(bench, quick=("--rows", "300", "--export-threshold", "0"))
    result = bench_cli.run_bench(tiny, True)
    assert result.ok, result.error
    figures = result.figures
    assert figures["update_only_vs_upsert"] is not None and figures["update_only_vs_upsert"] > 0
    assert figures["update_only_users_created"] == 0
    assert figures["update_only_export_requests"] == 1 and figures["update_only_getbyemail_requests"] == 0
