"""Consent under races, over real sockets: two drains on one person, and an unsubscribe that arrives
while the CustomersDot chain is between a person's profile write and their event."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from iterable_recipes.clients.iterable_models import event_id_from
from iterable_recipes.customersdot.drain import SOURCE as CUSTOMERSDOT
from iterable_recipes.customersdot.drain import CustomersDotDrain
from iterable_recipes.customersdot.mapping import load_mapping
from iterable_recipes.optouts.consent import load_consent_policy
from iterable_recipes.optouts.decisions import opt_out_people
from iterable_recipes.optouts.keys import SOURCE as OPTOUTS
from iterable_recipes.optouts.keys import webhook_item
from iterable_recipes.optouts.ledger import queue_for_written_people
from iterable_recipes.store.inbox import Inbox
from tests.integration import customersdot_event

pytestmark = pytest.mark.usefixtures("prefect_server")
MARKETING_EMAIL = 1
SMS = 3


def test_two_drains_opting_out_one_person_at_once_leave_them_out_and_their_other_choices_alone(
    iterable_standin, test_parts: dict[str, Any]
):
    sandbox = iterable_standin.sandbox
    sandbox.seed_users(
        [{"email": "raced@example.com", "subscribedMessageTypeIds": [101], "unsubscribedChannelIds": [SMS]}]
    )
    client = test_parts["iterable"]
    policy = load_consent_policy()
    policy.check_against(client.get_channels(), client.get_message_types())
    start = threading.Barrier(2)
    decisions: list[Any] = []

    def drain() -> None:
        start.wait()
        decisions.extend(opt_out_people(client, policy, ["raced@example.com"], additive=False))

    threads = [threading.Thread(target=drain) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(d.outcome for d in decisions) in (
        ["already_opted_out", "opted_out"],
        ["opted_out", "opted_out"],
    )
    with sandbox.lock:
        user = sandbox.find(email="raced@example.com")
        assert set(user.subs["unsubscribedChannelIds"]) == {MARKETING_EMAIL, SMS}
        assert user.subs["subscribedMessageTypeIds"] == [101]  # dormant, as the person left it


def test_an_unsubscribe_arriving_between_the_profile_write_and_the_event_holds_the_event(
    iterable_standin, app_database, test_parts: dict[str, Any]
):
    inbox = Inbox(app_database)
    client = test_parts["iterable"]
    sandbox = iterable_standin.sandbox
    event = customersdot_event()
    email = event["person"]["email"]
    inbox.add(CUSTOMERSDOT, event["id"], event["type"], event)

    def profiles_then_the_unsubscribe_lands(batch_no: int, users: list[dict[str, Any]]) -> Any:
        result = client.bulk_update_users(users)
        # Marketo's webhook for the same person is committed right now, mid-batch.
        inbox.add_many([webhook_item("4711", email, "2026-11-20T10:00:00+00:00")])
        return result

    owner = "drain-under-test"
    drain = CustomersDotDrain(
        load_mapping(),
        send_profiles=profiles_then_the_unsubscribe_lands,
        send_events=lambda batch_no, events: client.track_events(events),
        settle=lambda outcomes: inbox.settle(outcomes, owner).counts,
        not_found_delay=1.0,
        consent=lambda emails: queue_for_written_people(inbox, emails, "the test's chain")[0],
    )
    drain.deliver(inbox.claim(CUSTOMERSDOT, limit=10, owner=owner), batch_no=1)
    assert drain.counts["held"] == 1
    assert event_id_from("cdot", event["id"]) not in sandbox.events()
    assert inbox.counts()[OPTOUTS] == {"pending": 1}
    assert inbox.ledger.pending_among([email]) == {email}
