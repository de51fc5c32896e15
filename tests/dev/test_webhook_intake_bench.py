"""The intake bench at a tiny size, for real (receiver, bare endpoint, load generator): its figures."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dev.bench.common import ROOT, last_json_line
from dev.bench.webhook_intake import median_index

FIGURES = ("intake_vs_bare", "intake_bare_events_per_s", "intake_p99_ms_at_3000", "cpu_us_per_webhook")


def test_the_bench_prints_the_ratio_the_open_loop_p99_and_the_cpu_per_webhook() -> None:
    events = 300
    argv = [
        sys.executable, "-m", "dev.bench.webhook_intake", "--events", str(events), "--connections", "8",
        "--backends", "sqlite", "--rate-seconds", "0.2", "--rounds", "1",
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = last_json_line(done.stdout)
    for name in FIGURES:
        assert isinstance(figures[name], float) and figures[name] > 0, (name, figures[name])
    (receiver,) = figures["results"]
    assert (receiver["backend"], receiver["stored"], receiver["non_202"]) == ("sqlite", events, 0)
    assert (figures["bare"]["stored"], figures["bare"]["non_202"]) == (events, 0)
    # Every event offered in the open loop was answered 202 (600 at 3,000/s for 0.2 s).
    assert figures["intake_rate_offered"] == 3000.0 and figures["intake_rate_non_202"] == 0
    bare_rate = figures["intake_bare_events_per_s"]
    assert figures["intake_vs_bare"] == round(receiver["events_per_s"] / bare_rate, 3)
    assert figures["intake_rounds"] == [figures["intake_vs_bare"]]


@pytest.mark.parametrize(
    ("ratios", "median"), [([0.6], 0), ([0.9, 0.5, 0.7], 2), ([0.5, 0.8], 1), ([0.7, 0.7, 0.4], 0)]
)
def test_the_pair_reported_is_the_one_of_the_median_ratio(ratios: list[float], median: int) -> None:
    assert median_index(ratios) == median
