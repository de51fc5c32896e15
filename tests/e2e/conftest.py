"""End-to-end tests run under CI=true (`make test` in .ci/run) or RECIPES_E2E=1; skipped otherwise."""

from __future__ import annotations

import os

import pytest

from tests.conftest import IN_CI


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test here ``e2e``; outside CI they run only when asked (they take a minute or two)."""
    wanted = IN_CI or os.environ.get("RECIPES_E2E", "") in {"1", "true", "yes"}
    for item in items:
        if "tests/e2e/" not in str(item.fspath).replace(os.sep, "/"):
            continue
        item.add_marker(pytest.mark.e2e)
        if not wanted:
            item.add_marker(pytest.mark.skip(reason="end-to-end: runs under CI=true or RECIPES_E2E=1"))
