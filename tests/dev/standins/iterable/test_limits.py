"""Rate limits (429 in plain text with Retry-After) and the body cap (413)."""

from __future__ import annotations

import httpx

from dev.standins.iterable import IterableSandbox
from dev.standins.iterable.ratelimit import SlidingWindows


def test_sliding_window_admits_at_most_limit_per_second() -> None:
    windows = SlidingWindows()
    assert [windows.acquire("x", 3, 10.0 + i * 0.1) for i in range(3)] == [None, None, None]
    assert windows.acquire("x", 3, 10.5) == 1
    assert windows.acquire("y", 3, 10.5) is None  # endpoints are independent
    assert windows.acquire("x", 3, 11.01) is None  # the first request left the window


def test_rate_limited_requests_get_plain_text_429_with_retry_after(
    api: httpx.Client, sandbox: IterableSandbox
) -> None:
    sandbox.set_options(limits_enabled=True, rate_limits={"users/bulkUpdate": 2})
    statuses = []
    limited = None
    for _ in range(40):
        response = api.post("/users/bulkUpdate", json={"users": []})
        statuses.append(response.status_code)
        if response.status_code == 429:
            limited = response
            break
    assert limited is not None, statuses
    assert statuses[:2] == [200, 200]
    assert limited.headers["content-type"].startswith("text/plain")
    assert limited.text == "Rate limit exceeded. Please try again later."
    assert int(limited.headers["retry-after"]) >= 1
    assert sandbox.stats()["requests"]["users/bulkUpdate"]["429"] == 1
    # Endpoints without a limit are never throttled.
    assert all(
        api.post("/users/bulkUpdateSubscriptions", json={"updateSubscriptionsRequests": []}).status_code
        == 200
        for _ in range(20)
    )


def test_body_over_max_is_413(api: httpx.Client, sandbox: IterableSandbox) -> None:
    sandbox.set_options(max_body_bytes=2_000)
    users = [{"email": f"u{i}@example.com", "dataFields": {"pad": "x" * 50}} for i in range(40)]
    response = api.post("/users/bulkUpdate", json={"users": users})
    assert response.status_code == 413
    assert response.json()["code"] == "BatchTooLarge"
    assert sandbox.stats()["users"] == 0
    assert api.post("/users/bulkUpdate", json={"users": users[:5]}).status_code == 200


def test_default_body_cap_is_four_megabytes(api: httpx.Client, sandbox: IterableSandbox) -> None:
    users = [{"email": f"u{i}@example.com", "dataFields": {"pad": "x" * 4000}} for i in range(1001)]
    assert api.post("/users/bulkUpdate", json={"users": users}).status_code == 413
