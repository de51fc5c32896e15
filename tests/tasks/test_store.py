"""Store tasks: a database hiccup is tried again, outcomes only for the drain's items, dead ones announced."""

from __future__ import annotations

from typing import Any

import pytest

import tasks.store as store_tasks
from iterable_recipes.resources import Resources
from iterable_recipes.settings import Settings
from iterable_recipes.store import Inbox, NewItem, Outcome, migrate

pytestmark = pytest.mark.usefixtures("prefect_server")


class FlakyInbox(Inbox):
    """An inbox whose first claim fails the way a dropped database connection does."""

    failures = 1

    def claim(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database went away")
        return super().claim(*args, **kwargs)


@pytest.fixture
def url(tmp_path: Any) -> str:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate(url)
    return url


def test_claim_is_tried_again_after_a_database_hiccup(url: str) -> None:
    inbox = FlakyInbox(url)
    inbox.add_many([NewItem("customersdot", f"e{i}", "kind", {"n": i}) for i in range(3)])
    resources = Resources(Settings(_env_file=None, recipes_database_url=url), inbox=inbox)
    claim = store_tasks.claim_items.with_options(retry_delay_seconds=0)
    items = claim(resources, "customersdot", 10, "drain-a")
    assert [item.source_id for item in items] == ["e0", "e1", "e2"] and inbox.failures == 0
    inbox.dispose()


def test_outcomes_settle_only_the_drains_own_items_and_dead_ones_are_announced(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    announced: list[dict[str, Any]] = []
    monkeypatch.setattr(store_tasks, "emit_event", lambda **event: announced.append(event))
    inbox = Inbox(url)
    inbox.add_many([NewItem("customersdot", f"e{i}", "kind", {"n": i}) for i in range(3)])
    mine = inbox.claim("customersdot", limit=2, owner="drain-a")
    theirs = inbox.claim("customersdot", limit=1, owner="drain-b")
    resources = Resources(Settings(_env_file=None, recipes_database_url=url), inbox=inbox)
    outcomes = [
        Outcome(mine[0].id, "delivered"),
        Outcome(mine[1].id, "dead", "refused for a@example.com"),
        Outcome(theirs[0].id, "delivered"),  # not drain-a's to settle
    ]
    counts = store_tasks.record_outcomes(resources, "customersdot", outcomes, "drain-a")
    assert counts == {"delivered": 1, "retry": 0, "dead": 1, "skipped": 0}
    left = inbox.get(theirs[0].id)
    assert left is not None and left.status == "in_flight"
    assert [e["payload"]["item_id"] for e in announced] == [mine[1].id]
    assert "a@example.com" not in str(announced) and "a***@e***.com" in str(announced)
    inbox.dispose()
