"""End-to-end tests run under CI=true (`make test` in .ci/run) or RECIPES_E2E=1; skipped otherwise."""

from __future__ import annotations

import pytest

from tests.conftest import IN_CI, asked_by, gate_folder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test here ``e2e``; outside CI they run only when asked (they take a minute or two)."""
    wanted = IN_CI or asked_by("RECIPES_E2E")
    gate_folder(items, "e2e", "e2e", wanted, "end-to-end: runs under CI=true or RECIPES_E2E=1")
