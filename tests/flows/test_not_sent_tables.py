"""Each drain run lists, in a table artifact, every record it did not put through: masked identity, a
stable reference, Iterable's error and what happens next; records that went through are not listed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from iterable_recipes.store.inbox import Inbox, NewItem
from tests.integration import assert_no_raw_email, customersdot_event, flow_run_artifacts

pytestmark = pytest.mark.usefixtures("prefect_server")


def _table(state, key: str) -> list[dict[str, str]]:
    (artifact,) = flow_run_artifacts(state, key)
    import json

    data = artifact.data
    return json.loads(data) if isinstance(data, str) else data


def test_a_customersdot_run_lists_the_events_it_did_not_deliver(iterable_standin, app_database):
    from flows.customersdot_events import customersdot_drain

    inbox = Inbox(app_database)
    good = [customersdot_event() for _ in range(3)]
    refused = customersdot_event()
    broken = customersdot_event() | {"occurred_at": "not a time"}  # stored, then no longer valid
    bodies = [*good, refused, broken]
    results = inbox.add_many([NewItem("customersdot", b["id"], b["type"], b) for b in bodies])
    ids = [r.id for r in results]
    # Iterable takes the profiles, then refuses one event: the answer names its address as invalid.
    answer = {
        "successCount": 3,
        "failCount": 1,
        "failedUpdates": {"invalidEmails": [refused["person"]["email"]]},
    }
    iterable_standin.sandbox.set_faults(endpoint="events/trackBulk", fail_next=[{"body": answer}])

    state = customersdot_drain(batch_size=10, return_state=True)

    assert state.is_completed()
    rows = _table(state, "customersdot-not-sent")
    by_reference = {row["reference"]: row for row in rows}
    assert set(by_reference) == {f"inbox {ids[3]}", f"inbox {ids[4]}"}, rows
    invalid = by_reference[f"inbox {ids[3]}"]
    assert invalid["status"] == "dead" and "invalid" in invalid["error"].lower(), invalid
    assert f"recipes inbox retry {ids[3]}" in invalid["next"]
    assert invalid["identity"].startswith("p***@e***.com"), invalid
    assert "stored payload invalid" in by_reference[f"inbox {ids[4]}"]["error"]
    assert_no_raw_email([str(rows)], [b["person"]["email"] for b in bodies])
    inbox.dispose()


def test_a_customersdot_run_that_delivered_everything_publishes_no_table(iterable_standin, app_database):
    from flows.customersdot_events import customersdot_drain

    inbox = Inbox(app_database)
    bodies = [customersdot_event() for _ in range(2)]
    inbox.add_many([NewItem("customersdot", b["id"], b["type"], b) for b in bodies])

    state = customersdot_drain(return_state=True)

    assert state.is_completed()
    assert flow_run_artifacts(state, "customersdot-not-sent") == []
    inbox.dispose()


def test_a_failed_customersdot_run_lists_each_event_due_again_with_its_time(iterable_standin, app_database):
    from flows.customersdot_events import customersdot_drain

    inbox = Inbox(app_database)
    bodies = [customersdot_event() for _ in range(3)]
    inbox.add_many([NewItem("customersdot", b["id"], b["type"], b) for b in bodies])
    iterable_standin.sandbox.set_faults(endpoint="users/bulkUpdate", fail_next=[401] * 10)

    state = customersdot_drain(return_state=True)

    assert state.is_failed()
    rows = _table(state, "customersdot-not-sent")
    assert len(rows) == 3, rows
    for row in rows:
        assert row["status"] == "retry" and "401" in row["error"], row
        assert row["next"].startswith("tried again at ") and "(attempt 2 of " in row["next"], row
    inbox.dispose()


def test_an_opt_out_run_lists_the_people_iterable_does_not_know_and_not_those_already_out(
    iterable_standin, marketo_standin, app_database
):
    from flows.marketo_unsubscribes import marketo_optout_drain, marketo_poll

    people = ["known.one@example.com", "already.out@example.com", "nobody.here@example.com"]
    sandbox = iterable_standin.sandbox
    sandbox.seed_users([{"email": people[0]}, {"email": people[1], "unsubscribedChannelIds": [1]}])
    for lead_id, email in enumerate(people, start=1):
        marketo_standin.sandbox.add_lead(lead_id, email)
        marketo_standin.sandbox.unsubscribe(lead_id, how="link")
    marketo_poll(start=datetime.now(UTC) - timedelta(hours=1), drain=False)

    state = marketo_optout_drain(return_state=True)

    assert state.is_completed()
    (row,) = _table(state, "marketo-opt-outs-not-sent")
    assert row["reference"].startswith("lead 3, inbox "), row
    assert row["status"] == "skipped" and row["identity"].startswith("n***@e***.com"), row
    assert "consent ledger" in row["next"], row
    assert_no_raw_email([str(row)], people)
