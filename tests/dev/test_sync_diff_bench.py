"""dev/bench/sync_diff.py for real at a tiny size: the diff and the bare statement it is measured
against both run, and `recipes bench` reads their figures."""

from __future__ import annotations

import dataclasses

import pytest

import dev.bench.run_all as bench_cli


def test_the_diff_bench_runs_at_a_tiny_size_with_its_bare_reference() -> None:
    bench = next(b for b in bench_cli.BENCHES if b.name == "sync_diff")
    tiny = dataclasses.replace(bench, quick=("--rows", "5000"))
    result = bench_cli.run_bench(tiny, True)
    assert result.ok, result.error
    figures = result.figures
    for key in ("sync_diff_seconds_1m_rows", "diff_bare_seconds", "diff_vs_bare"):
        value = figures[key]
        assert value is not None and value > 0, key
    assert figures["sync_diff_rows_in_model"] == 5000


def test_the_bare_statement_stages_what_the_diff_stages() -> None:
    """At a tiny size the bare reference keeps the same changed rows as the diff (so the ratio compares
    like with like), re-planning the run changes nothing, and every changed row is fetched once."""
    from dev.bench.sync_diff import run

    figures = run(5000, 0.02, repeats=2)
    assert figures["rows_changed"] > 0
    assert len(figures["diff_runs_s"]) == len(figures["diff_bare_runs_s"]) == 2  # in turns, medians kept
    assert figures["bare_rows"] == figures["staged"] == figures["rows_changed"] == figures["rows_fetched"]
    assert figures["diff_s"] > 0 and figures["diff_bare_s"] > 0
    assert figures["diff_cpu_s"] > 0 and figures["diff_bare_cpu_s"] > 0  # fakesnow's process, from /proc
    # From the unrounded seconds, so only about the ratio of the rounded ones.
    assert figures["diff_vs_bare"] == pytest.approx(figures["diff_s"] / figures["diff_bare_s"], rel=0.05)
