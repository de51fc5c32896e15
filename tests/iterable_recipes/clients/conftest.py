"""Client-test fixtures: cassettes live in cassettes/ beside these tests, matched on JSON bodies too."""

from __future__ import annotations

import json
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "live_iterable: talks to a real Iterable project; skipped unless ITERABLE_RECORD_API_KEY is set",
    )


def _json_body(request: Any) -> Any:
    body = request.body
    if not body:
        return None
    if isinstance(body, bytes):
        body = body.decode()
    try:
        return json.loads(body)
    except ValueError:
        return body


def _same_json_body(r1: Any, r2: Any) -> None:
    # Compared as parsed JSON so key order and spacing do not matter, but every field and value does.
    assert _json_body(r1) == _json_body(r2), "request bodies differ"


def pytest_recording_configure(config: pytest.Config, vcr: Any) -> None:
    vcr.register_matcher("json_body", _same_json_body)
