"""The per-record list of a run: capped, counted in full, and a record delivered later leaves it."""

from __future__ import annotations

from datetime import UTC, datetime

from iterable_recipes.not_sent import NotSent, next_step, table_rows
from iterable_recipes.store import Item, Outcome

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _item(id: int, status: str = "retry", attempts: int = 1) -> Item:
    return Item(
        id=id, source="customersdot", source_id=str(id), kind="k", payload={}, status=status,  # type: ignore[arg-type]
        attempts=attempts, next_attempt_at=NOW, last_error="boom", lease_owner=None, lease_expires_at=None,
        webhook_id=None, dedupe_key=None, created_at=NOW, updated_at=NOW, delivered_at=None,
    )  # fmt: skip


def test_the_list_is_capped_but_counts_every_record_and_forgets_those_delivered_later():
    not_sent = NotSent(lambda item: (f"person {item.id}", f"inbox {item.id}"), cap=2)
    items = [_item(i) for i in range(1, 6)]
    not_sent.note(items, [Outcome(i.id, "retry", "boom") for i in items], {"retry": 5})
    not_sent.note(items[:1], [Outcome(1, "delivered")], {"delivered": 1})  # its retry went through

    assert not_sent.total == 4
    assert [n.item_id for n in not_sent.shown()] == [2]  # the cap was reached before 1 left
    rows = table_rows([{"identity": "person 2"}], not_sent.total)
    assert rows[-1]["identity"] == "and 3 more not shown"


def test_outcomes_another_drain_refused_are_not_this_runs():
    not_sent = NotSent(lambda item: ("x", "y"))
    not_sent.note([_item(1)], [Outcome(1, "retry", "boom")], {"refused": 1})
    assert not_sent.total == 0


def test_next_step_says_when_and_which_attempt_or_how_to_bring_back_a_dead_one():
    assert next_step(_item(7, attempts=3), 20) == "tried again at 2026-12-01 12:00:00 UTC (attempt 4 of 20)"
    assert "recipes inbox retry 7" in next_step(_item(7, status="dead"), 20)
    assert next_step(_item(7, status="skipped"), 20, lambda item: "looked up later") == "looked up later"
