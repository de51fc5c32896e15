"""What a person watching a long run sees: done of total, the rate and the time left, published at most
once per interval (on a clock the test moves), and nothing at all from a run that found nothing."""

from __future__ import annotations

import pytest

from iterable_recipes.sentences import duration
from tasks import reporting
from tasks.reporting import Progress, ProgressView, publish_found


class Clock:
    """Monotonic seconds the test sets."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A progress sink that keeps what would have gone to Prefect."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, str]] = []

    def create(self, percent: float, markdown: str) -> None:
        self.calls.append(("create", percent, markdown))

    def update(self, percent: float, markdown: str) -> None:
        self.calls.append(("update", percent, markdown))


def progress(clock: Clock, sink: Recorder) -> Progress:
    return Progress("Rows of contacts sent to Iterable", "sync-contacts-progress", clock=clock, sink=sink)


def test_rate_and_time_left_come_from_the_clock() -> None:
    view = ProgressView(done=3_000, total=12_000, elapsed_seconds=10.0)
    assert (view.percent, view.rate, view.seconds_left) == (25.0, 300.0, 30.0)
    assert ProgressView(0, 10, 4.0).seconds_left is None  # nothing done yet: no rate to go by
    assert ProgressView(10, 10, 4.0).seconds_left == 0.0
    assert ProgressView(0, 0, 0.0).percent == 100.0
    assert [duration(s) for s in (None, 4.4, 125, 7_380)] == ["unknown", "4 s", "2 min 5 s", "2 h 3 min"]


def test_progress_publishes_at_most_once_per_interval_and_always_the_end() -> None:
    clock, sink = Clock(), Recorder()
    shown = progress(clock, sink)
    assert shown.update(0, 40_000)  # the first call shows where the run starts
    published = []
    for step in range(1, 41):  # a batch of 1,000 rows answered every 0.5 s
        clock.now += 0.5
        if shown.update(step * 1_000, 40_000):
            published.append(clock.now - 100.0)
    # Every 5 s while rows come back, and the end at once (20 s, not waiting for 25 s).
    assert published == [5.0, 10.0, 15.0, 20.0]
    assert [kind for kind, _, _ in sink.calls] == ["create"] + ["update"] * 4
    assert not shown.update(40_000, 40_000, final=True)  # the end is shown once

    _, percent, markdown = sink.calls[2]  # at 10 s: 20,000 rows
    assert percent == 50.0
    assert "| 20,000 | 40,000 (50 %) | 2,000.0 rows/s | 10 s | 10 s |" in markdown
    assert "Rows of contacts sent to Iterable" in markdown


def test_progress_is_updated_while_a_slow_batch_is_waited_for() -> None:
    clock, sink = Clock(), Recorder()
    shown = progress(clock, sink)
    shown.update(0, 2_000)
    # One batch at the rate limit takes 12 s; the sender reports every half second meanwhile.
    for _ in range(24):
        clock.now += 0.5
        shown.update(0, 2_000)
    assert len(sink.calls) == 3  # at 0, 5 and 10 s: elapsed and time left keep moving
    assert "| 0 | 2,000 (0 %) | 0.0 rows/s | unknown | 10 s |" in sink.calls[-1][2]


def test_the_end_is_shown_at_once_even_when_short_of_the_total() -> None:
    clock, sink = Clock(), Recorder()
    shown = progress(clock, sink)
    shown.update(0, 5_000)
    clock.now += 1
    assert shown.update(4_000, 5_000, final=True)  # a failed batch's rows were not answered
    assert sink.calls[-1][1] == 80.0


def test_a_run_with_nothing_to_do_shows_no_progress_and_no_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, sink = Clock(), Recorder()
    shown = progress(clock, sink)
    assert not shown.update(0, 0) and not shown.update(0, 0, final=True)
    assert sink.calls == []
    published: list[str] = []
    monkeypatch.setattr(
        reporting, "publish_counts", lambda recipe, counts, description="": published.append(recipe)
    )
    assert not publish_found("customersdot", {"received": 0, "delivered": 0})
    assert publish_found("customersdot", {"received": 1, "delivered": 0})
    assert published == ["customersdot"]
