"""The batch pipeline: at most ``depth`` batches in flight, unused slots given back, failures stop it."""

from __future__ import annotations

import threading

import pytest

from iterable_recipes.pipeline import BatchPipeline


def test_at_most_depth_batches_are_in_flight_and_every_batch_runs() -> None:
    running, most, done = 0, 0, []
    lock = threading.Lock()
    release = threading.Event()

    def work(n: int) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(5)
        with lock:
            running -= 1
            done.append(n)

    with BatchPipeline(depth=3) as pipeline:
        for n, slot in enumerate(pipeline.slots(limit=10)):
            if n == 3:
                release.set()  # the fourth slot came only after a batch finished
            slot.run(work, n)
    assert sorted(done) == list(range(10)) and most <= 3


def test_a_slot_not_run_is_given_back() -> None:
    with BatchPipeline(depth=1) as pipeline:
        for n, slot in enumerate(pipeline.slots(limit=5)):
            if n % 2:
                slot.run(lambda: None)
    # Five slots were handed out on a depth of one: each unused one came back at once.


def test_a_failing_batch_stops_the_pipeline_and_fails_it() -> None:
    def boom() -> None:
        raise RuntimeError("unexpected")

    given = 0
    with pytest.raises(RuntimeError, match="unexpected"), BatchPipeline(depth=1) as pipeline:
        for slot in pipeline.slots():
            given += 1
            slot.run(boom)
    assert given == 1
