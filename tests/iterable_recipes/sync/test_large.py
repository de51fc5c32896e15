"""At 200,000 rows an unchanged model must report zero changes: the row hash is stable under fakesnow."""

from __future__ import annotations

from typing import Any

from dev.warehouse import mutate, seed_model
from iterable_recipes.sync import accept_all, plan_changes
from iterable_recipes.sync.definitions import SyncDefinition
from tests.iterable_recipes.sync.conftest import STATE


def test_200k_unchanged_model_reports_zero_changes(conn: Any, gitlab: SyncDefinition) -> None:
    seed_model(conn, 200_000)
    first = plan_changes(conn, gitlab, "big1", state_schema=STATE)
    assert (first.new, first.batches) == (200_000, 200)
    accept_all(conn, gitlab, "big1", state_schema=STATE)
    # Twice: OBJECT_CONSTRUCT-based hashes drifted on some evaluations only (research/fakesnow.md §4).
    for run in ("big2", "big3"):
        again = plan_changes(conn, gitlab, run, state_schema=STATE)
        assert (again.to_send, again.unchanged) == (0, 200_000), run
    assert mutate(conn, 0.001, seed=9) == 200
    assert plan_changes(conn, gitlab, "big4", state_schema=STATE).changed == 200
