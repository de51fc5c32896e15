from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iterable_recipes.clients.errors import PermanentError, RetryableError
from iterable_recipes.clients.retry import TASK_RETRIES, TASK_RETRY_DELAYS, RetryPolicy, call_with_retries


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(attempts=10, base_delay=1.0, max_delay=5.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


@given(attempt=st.integers(1, 30), jitter=st.floats(0, 1))
def test_jitter_stays_within_its_band(attempt: int, jitter: float) -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=1000.0, jitter=jitter)
    base = min(1000.0, 0.5 * 2 ** (attempt - 1))
    assert base <= policy.delay(attempt) <= min(1000.0, base * (1 + jitter))


def test_retry_after_replaces_backoff_and_is_capped() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=10.0, jitter=0.0)
    assert policy.delay(1, retry_after=7.0) == 7.0
    assert policy.delay(1, retry_after=3600.0) == 10.0
    assert policy.delay(3, retry_after=0.0) == 0.0


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=-1)


def test_call_with_retries_retries_retryable_then_succeeds() -> None:
    calls: list[int] = []
    seen: list[tuple[int, float]] = []
    waits: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RetryableError("busy", status=503, retry_after=2.0)
        return "done"

    policy = RetryPolicy(attempts=5, base_delay=0.1, max_delay=60, jitter=0)
    result = call_with_retries(
        flaky, policy, on_retry=lambda n, err, d: seen.append((n, d)), sleep=waits.append
    )
    assert result == "done"
    assert len(calls) == 3
    assert seen == [(1, 2.0), (2, 2.0)]
    assert waits == [2.0, 2.0]


def test_call_with_retries_gives_up_after_attempts() -> None:
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise RetryableError("down", status=502)

    with pytest.raises(RetryableError):
        call_with_retries(down, RetryPolicy(attempts=3, base_delay=0), sleep=lambda _: None)
    assert len(calls) == 3


def test_permanent_errors_are_not_retried() -> None:
    calls: list[int] = []

    def bad() -> None:
        calls.append(1)
        raise PermanentError("nope", status=400)

    with pytest.raises(PermanentError):
        call_with_retries(bad, RetryPolicy(attempts=5, base_delay=0), sleep=lambda _: None)
    assert calls == [1]


def test_task_level_constants_are_usable_by_prefect() -> None:
    assert len(TASK_RETRY_DELAYS) == TASK_RETRIES
    assert sorted(TASK_RETRY_DELAYS) == TASK_RETRY_DELAYS


def test_a_retry_the_limiter_holds_is_sent_without_a_wait_of_its_own() -> None:
    sleeps: list[float] = []
    answers = iter([RetryableError("429", status=429, retry_after=2.0, held_by_limiter=True), None])

    def call() -> str:
        failure = next(answers)
        if failure is not None:
            raise failure
        return "ok"

    assert call_with_retries(call, RetryPolicy(base_delay=1.0), on_retry=None, sleep=sleeps.append) == "ok"
    assert sleeps == [0.0]
