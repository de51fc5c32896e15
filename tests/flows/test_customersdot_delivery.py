"""Recipe 1 end to end over real sockets: late profiles, an Iterable outage, a permanently rejected item.

Each test feeds the inbox (through the signed webhook, or directly), runs the drain flow against the
Iterable stand-in, and reads what the stand-in holds and how often it wrote each event id.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from dev.standins.serving import serving
from iterable_recipes.cli.main import app as recipes
from iterable_recipes.store.inbox import Inbox, NewItem
from tests.integration import IterableStandIn, customersdot_event, signed

pytestmark = pytest.mark.usefixtures("prefect_server")
SOURCE = "customersdot"


def post_signed(bodies: list[dict[str, Any]]) -> list[int]:
    """POST each body, signed, to the webhook receiver served on a real socket; the statuses."""
    from iterable_recipes.receiver.app import create_app

    with serving(create_app()) as base, httpx.Client(base_url=base) as http:
        statuses = []
        for body in bodies:
            raw, headers = signed(body)
            statuses.append(http.post("/webhooks/customersdot", content=raw, headers=headers).status_code)
    return statuses


def add_directly(inbox: Inbox, bodies: list[dict[str, Any]]) -> list[int]:
    """Store events as the receiver does (no HTTP), for tests about the drain only; the item ids."""
    return [r.id for r in inbox.add_many([NewItem(SOURCE, b["id"], b["type"], b) for b in bodies])]


def event_id(body: dict[str, Any]) -> str:
    """The Iterable event id the drain derives from a CustomersDot event."""
    return f"cdot-{body['id']}"


def make_due(inbox: Inbox) -> int:
    """Make every item waiting to retry due now (the inbox's backoff is 15 s and more)."""
    waiting = inbox.list_items(status="retry", source=SOURCE, limit=10_000)
    return sum(inbox.retry(item.id) for item in waiting)


def test_late_profiles_retry_until_iterable_applies_them(
    iterable_standin: IterableStandIn, app_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.customersdot_events import customersdot_drain

    # Long enough that no run comes back to its own retries however slow the machine; made due by hand.
    monkeypatch.setenv("EVENT_NOT_FOUND_RETRY_SECONDS", "600")
    sandbox = iterable_standin.sandbox
    # Profiles are applied long after they are accepted, until the test flushes them.
    sandbox.set_options(profile_delay_seconds=600)
    bodies = [
        customersdot_event("saas_trial_started", latest_trial_start_date="2026-11-20"),
        customersdot_event("free_registration", registration_kind="team", company="Initech"),
        customersdot_event("namespace_user_invited", firstName="Grace", namespace_id=42),
    ]
    assert post_signed(bodies) == [202, 202, 202]

    first = customersdot_drain()
    assert first["received"] == 3 and first["retry"] == 3 and first["delivered"] == 0, first
    inbox = Inbox(app_database)
    waiting = inbox.list_items(status="retry", source=SOURCE)
    assert len(waiting) == 3
    assert all(item.last_error == "Iterable has not applied the profile yet" for item in waiting)
    assert sandbox.events() == {}
    assert sum(sandbox.stats()["requests"]["events/trackBulk"].values()) >= 1

    assert sandbox.flush() >= 3  # Iterable has now applied the profiles
    assert make_due(inbox) == 3
    second = customersdot_drain()
    assert second["received"] == 3 and second["delivered"] == 3, second

    events = sandbox.events()
    assert set(events) == {event_id(b) for b in bodies}
    assert events[event_id(bodies[0])]["eventName"] == "SaaS Trials"
    assert events[event_id(bodies[1])]["eventName"] == "SaaS Free Registration"
    assert events[event_id(bodies[2])]["eventName"] == "Invited User Onboarding"
    trial_person = sandbox.user(bodies[0]["person"]["email"])
    assert trial_person is not None
    assert trial_person["dataFields"]["company"] == "Acme"
    assert trial_person["dataFields"]["latest_trial_start_date"] == "2026-11-20"
    team = sandbox.user(bodies[1]["person"]["email"])
    assert team is not None and team["dataFields"]["company"] == "Initech"
    # Nothing reached Iterable's event store before its person existed, so one write per id.
    assert set(sandbox.stats()["event_writes"].values()) == {1}
    assert inbox.counts()[SOURCE] == {"delivered": 3}


def test_outage_then_every_event_delivered(iterable_standin: IterableStandIn, app_database: str) -> None:
    from flows.customersdot_events import customersdot_drain

    sandbox = iterable_standin.sandbox
    inbox = Inbox(app_database)
    bodies = [customersdot_event() for _ in range(25)]
    add_directly(inbox, bodies)
    # 503 with Retry-After on every endpoint until the faults are cleared.
    sandbox.set_faults(outage_seconds=3600)

    during = customersdot_drain(batch_size=10)
    assert during["received"] == 25 and during["retry"] == 25 and during["delivered"] == 0, during
    assert sandbox.stats()["requests"]["users/bulkUpdate"].get("503", 0) >= 3
    assert sandbox.events() == {} and sandbox.users() == []
    assert all(item.attempts == 1 for item in inbox.list_items(status="retry", source=SOURCE))

    sandbox.clear_faults()
    assert make_due(inbox) == 25
    after = customersdot_drain(batch_size=10)
    assert after["delivered"] == 25, after

    assert set(sandbox.events()) == {event_id(b) for b in bodies}
    assert set(sandbox.stats()["event_writes"].values()) == {1}
    assert inbox.counts()[SOURCE] == {"delivered": 25}
    for body in bodies:
        person = sandbox.user(body["person"]["email"])
        assert person is not None and person["dataFields"]["firstName"] == "Ada"


def test_rejected_item_goes_dead_and_cli_retry_sends_it_after_the_fix(
    iterable_standin: IterableStandIn, app_database: str
) -> None:
    from flows.customersdot_events import customersdot_drain

    sandbox = iterable_standin.sandbox
    # Someone stored employeeBucket as a number: Iterable's project schema now types it "long".
    sandbox.seed_users([{"email": "seeded@example.com", "dataFields": {"employeeBucket": 5}}])
    clash = customersdot_event(employeeBucket="1-99")
    fine = [customersdot_event(), customersdot_event("namespace_user_invited")]
    assert post_signed([clash, *fine]) == [202, 202, 202]

    first = customersdot_drain()
    assert first["delivered"] == 2 and first["dead"] == 1, first
    inbox = Inbox(app_database)
    (dead,) = inbox.list_items(status="dead", source=SOURCE)
    assert dead.source_id == clash["id"]
    assert dead.last_error is not None and dead.last_error.startswith("invalid_data")
    assert "employeeBucket" in dead.last_error
    assert event_id(clash) not in sandbox.events()
    assert sandbox.user(clash["person"]["email"]) is None

    runner = CliRunner()
    listed = runner.invoke(recipes, ["inbox", "list", "--status", "dead"])
    assert listed.exit_code == 0 and str(dead.id) in listed.output and "invalid_data" in listed.output
    assert clash["person"]["email"] not in listed.output

    # The fix: the project's field is retyped to string (in Iterable, by its support or a new field).
    with sandbox.lock:
        sandbox.user_field_types["employeeBucket"] = "string"
    retried = runner.invoke(recipes, ["inbox", "retry", str(dead.id)])
    assert retried.exit_code == 0, retried.output

    second = customersdot_drain()
    assert second["received"] == 1 and second["delivered"] == 1, second
    person = sandbox.user(clash["person"]["email"])
    assert person is not None and person["dataFields"]["employeeBucket"] == "1-99"
    assert sandbox.events()[event_id(clash)]["dataFields"]["employeeBucket"] == "1-99"
    assert inbox.counts()[SOURCE] == {"delivered": 3}
    assert set(sandbox.stats()["event_writes"].values()) == {1}
