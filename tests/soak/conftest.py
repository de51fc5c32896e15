"""The soak runs under CI=true (small size) or when RECIPES_E2E=1 or RECIPES_SOAK=1; skipped otherwise."""

from __future__ import annotations

import os

import pytest

from tests.conftest import IN_CI


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the soak ``e2e``; outside CI it runs only when asked (it takes two to three minutes)."""
    asked = {os.environ.get(name, "") for name in ("RECIPES_E2E", "RECIPES_SOAK")} & {"1", "true", "yes"}
    for item in items:
        if "tests/soak/" not in str(item.fspath).replace(os.sep, "/"):
            continue
        item.add_marker(pytest.mark.e2e)
        if not (IN_CI or asked):
            item.add_marker(
                pytest.mark.skip(reason="soak: runs under CI=true, RECIPES_E2E=1 or RECIPES_SOAK=1")
            )
