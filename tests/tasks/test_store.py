"""Store tasks: a database hiccup is tried again, outcomes only for the drain's items, dead ones announced,
leases of runs that ended given back."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.states import Crashed, Running

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
    assert counts == {"delivered": 1, "retry": 0, "dead": 1, "skipped": 0, "held": 0, "refused": 1}
    left = inbox.get(theirs[0].id)
    assert left is not None and left.status == "in_flight"
    assert [e["payload"]["item_id"] for e in announced] == [mine[1].id]
    assert "a@example.com" not in str(announced) and "a***@e***.com" in str(announced)
    inbox.dispose()


def test_an_item_whose_lease_ran_out_on_every_attempt_dies_announced(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    announced: list[dict[str, Any]] = []
    monkeypatch.setattr(store_tasks, "emit_event", lambda **event: announced.append(event))
    inbox = Inbox(url, max_attempts=2)
    (added,) = inbox.add_many([NewItem("customersdot", "e0", "kind", {"n": 0})])
    # Two drains in a row die holding it (each claim is an attempt; the lease runs out at once).
    for _ in range(2):
        assert [i.id for i in inbox.claim("customersdot", limit=1, lease_seconds=0)] == [added.id]
    resources = Resources(Settings(_env_file=None, recipes_database_url=url), inbox=inbox)
    assert store_tasks.claim_items(resources, "customersdot", 10, "drain-c") == []
    item = inbox.get(added.id)
    assert item is not None and item.status == "dead"
    assert [(e["event"], e["payload"]["item_id"]) for e in announced] == [
        ("recipes.inbox.item.dead", added.id)
    ]
    inbox.dispose()


def _flow_run_in(state_name: str) -> str:
    """The id of a new flow run on the test server, put in ``state_name`` (Crashed, as the lost-runs
    automation leaves a SIGKILLed run, or Running)."""
    with get_client(sync_client=True) as client:
        created = client.create_flow_run(flow=flow(name="lease-holder")(lambda: None), name=state_name)
        state: State[Any] = Crashed(message="No heartbeat") if state_name == "Crashed" else Running()
        client.set_flow_run_state(created.id, state, force=True)
        return str(created.id)


def test_leases_of_runs_that_ended_are_released_and_live_runs_keep_theirs(url: str) -> None:
    inbox = Inbox(url)
    inbox.add_many([NewItem("customersdot", f"e{i}", "kind", {"n": i}) for i in range(4)])
    crashed, running = _flow_run_in("Crashed"), _flow_run_in("Running")
    lost = [i.id for i in inbox.claim("customersdot", limit=2, owner=crashed)]
    live = inbox.claim("customersdot", limit=1, owner=running)
    unknown = inbox.claim("customersdot", limit=1, owner="not-a-flow-run")
    resources = Resources(Settings(_env_file=None, recipes_database_url=url), inbox=inbox)

    assert store_tasks.release_ended_runs(resources, "customersdot", "this-run") == 2
    again = inbox.claim("customersdot", limit=10, owner="next-drain")
    assert sorted(i.id for i in again) == lost, "a Crashed run's items were not due at once"
    assert inbox.lease_holders("customersdot") == sorted(["next-drain", running, "not-a-flow-run"])
    for item, owner in ((live[0], running), (unknown[0], "not-a-flow-run")):
        kept = inbox.get(item.id)
        assert kept is not None and kept.lease_owner == owner
    inbox.dispose()


def test_a_retried_run_takes_back_what_its_earlier_attempt_held(url: str) -> None:
    inbox = Inbox(url)
    inbox.add_many([NewItem("customersdot", f"e{i}", "kind", {"n": i}) for i in range(2)])
    resources = Resources(Settings(_env_file=None, recipes_database_url=url), inbox=inbox)

    @flow
    def retried_drain() -> tuple[int, list[int]]:
        owner = store_tasks.run_owner()
        UUID(owner)  # the lease owner is the flow run's id
        # `prefect flow-run retry` keeps the run's id: what the killed attempt leased is leased to it.
        inbox.claim("customersdot", limit=2, owner=owner)
        released = store_tasks.release_ended_runs(resources, "customersdot", owner)
        return released, [i.id for i in store_tasks.claim_items(resources, "customersdot", 10, owner)]

    released, claimed = retried_drain()
    assert released == 2 and len(claimed) == 2
    inbox.dispose()
