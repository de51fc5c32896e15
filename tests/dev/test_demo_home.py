"""`recipes demo` and `recipes serve` (plain or --embedded) run the local Prefect server on one home, so
the UI either shows holds the other's runs; `recipes status` looks there too."""

from __future__ import annotations

from pathlib import Path

from dev.demo import demo_stack
from dev.serve_embedded import embedded_stack
from iterable_recipes.cli.local_stack import (
    API_URL_FILE,
    PREFECT_HOME,
    LocalParts,
    LocalStack,
    api_served_from,
)


def test_demo_and_serve_resolve_the_same_prefect_home():
    serve = LocalStack(LocalParts(prefect=True, app_database=True, limiter=True))
    homes = {stack.env_prefect_home for stack in (demo_stack(), embedded_stack(), serve)}
    assert homes == {str(PREFECT_HOME.resolve())}
    # The demo keeps its app database apart (it starts it afresh each time); only Prefect's is shared.
    assert demo_stack().state_dir != serve.state_dir


def test_a_server_is_found_only_when_it_answers(tmp_path: Path):
    (tmp_path / API_URL_FILE).write_text("http://127.0.0.1:9/api")  # what a killed server left behind
    assert api_served_from(tmp_path) is None
    assert api_served_from(tmp_path / "nothing-here") is None
