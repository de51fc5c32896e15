"""The Prefect test server as `recipes serve` and `recipes status` meet it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from iterable_recipes.cli.serve import served_names


@pytest.fixture
def prefect_client(prefect_server: None) -> Iterator[Any]:
    """A sync client of the test server, with none of prefect.yaml's deployments on it yet."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for name in served_names():
            with contextlib.suppress(ObjectNotFound):
                client.delete_deployment(client.read_deployment_by_name(name).id)
        yield client


@pytest.fixture
def register() -> Callable[[list[Any]], None]:
    """Registers deployments the way `recipes serve` does: prefect.serve adds each to a Runner."""
    from prefect.runner import Runner

    def add(deployments: list[Any]) -> None:
        runner = Runner(pause_on_shutdown=False)
        for deployment in deployments:
            runner.add_deployment(deployment)

    return add


@pytest.fixture
def served_api_url(prefect_server: None) -> str:
    """The test server's API URL (request it before a fixture that hides it from Prefect's settings)."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())
