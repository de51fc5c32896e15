"""What a run shows in Prefect: its own sentences in the run's logs, task runs named by what they hold,
no raw email anywhere, and a failed run's state message naming the first error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from iterable_recipes.store.inbox import Inbox, NewItem
from tests.integration import assert_no_raw_email, customersdot_event, flow_run_id, run_logs, task_run_names

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_a_drain_run_says_what_it_claimed_sent_and_settled(iterable_standin, app_database):
    from flows.customersdot_events import customersdot_drain

    inbox = Inbox(app_database)
    bodies = [customersdot_event() for _ in range(12)]
    inbox.add_many([NewItem("customersdot", b["id"], b["type"], b) for b in bodies])

    state = customersdot_drain(batch_size=5, return_state=True)

    assert state.is_completed()
    lines = run_logs(flow_run_id(state))
    text = "\n".join(lines)
    assert "Batch 1: claimed 5 CustomersDot events. Iterable accepted 5 profiles of 5." in text, text
    assert "Batch 3: claimed 2 CustomersDot events." in text
    assert "Iterable accepted 2 events of 2. Outcomes: 2 delivered." in text
    assert "Drained 12 CustomersDot events in 3 batches; outcomes: 12 delivered." in text
    assert sum("Batch " in line for line in lines) == 3, "one line per batch"
    expected = {
        "bulkUpdate batch 1, 5 users",
        "trackBulk batch 3, 2 events",
        "claim customersdot batch 2, up to 5",
    }
    names = task_run_names(flow_run_id(state), expected)
    assert expected <= set(names), names
    assert_no_raw_email(lines + names, [b["person"]["email"] for b in bodies])
    inbox.dispose()


def test_a_drain_refused_by_iterable_fails_naming_the_cause(iterable_standin, app_database):
    from flows.customersdot_events import customersdot_drain

    inbox = Inbox(app_database)
    bodies = [customersdot_event() for _ in range(4)]
    inbox.add_many([NewItem("customersdot", b["id"], b["type"], b) for b in bodies])
    iterable_standin.sandbox.set_faults(endpoint="users/bulkUpdate", fail_next=[401] * 10)

    state = customersdot_drain(batch_size=2, return_state=True)

    assert state.is_failed()
    message = state.message or ""
    assert "users/bulkUpdate 401 BadApiKey" in message, message
    lines = run_logs(flow_run_id(state))
    stopped = "Stopped claiming: Iterable refused the account (users/bulkUpdate 401 BadApiKey"
    assert any(stopped in line for line in lines), lines
    assert_no_raw_email(lines, [b["person"]["email"] for b in bodies])
    inbox.dispose()


def test_a_run_with_a_wrong_api_key_fails_naming_401_bad_api_key(iterable_standin, app_database, test_parts):
    from flows.customersdot_events import customersdot_drain
    from iterable_recipes.clients.iterable import IterableClient
    from tests.integration import FAST_RETRY

    test_parts["iterable"] = IterableClient("a-wrong-key", base_url=iterable_standin.url, retry=FAST_RETRY)
    try:
        state = customersdot_drain(return_state=True)
    finally:
        test_parts["iterable"].close()

    assert state.is_failed()
    message = state.message or ""
    assert "401" in message and "BadApiKey" in message, message
    assert "a-wrong-key" not in message


def test_an_opt_out_run_logs_one_line_per_batch_and_names_its_task_runs(
    iterable_standin, marketo_standin, app_database
):
    from flows.marketo_unsubscribes import marketo_optout_drain, marketo_poll

    people = ["known.one@example.com", "known.two@example.com", "nobody.here@example.com"]
    iterable_standin.sandbox.seed_users([{"email": e} for e in people[:2]])
    for lead_id, email in enumerate(people, start=1):
        marketo_standin.sandbox.add_lead(lead_id, email)
        marketo_standin.sandbox.unsubscribe(lead_id, how="link")
    poll = marketo_poll(start=datetime.now(UTC) - timedelta(hours=1), drain=False, return_state=True)

    state = marketo_optout_drain(batch_size=2, return_state=True)

    assert state.is_completed()
    lines = run_logs(flow_run_id(state))
    text = "\n".join(lines)
    assert "Opt-out batch 1, 2 leads:" in text and "Opt-out batch 2, 1 lead:" in text, text
    assert "Opt-out drain done: 3 unsubscribe(s) in 2 batch(es); 2 opted out, 1 not in Iterable" in text
    expected = {"opt-out batch 1, 2 leads", "opt-out batch 2, 1 lead"}
    names = task_run_names(flow_run_id(state), expected)
    assert expected <= set(names), names
    assert any("Queued 3 Marketo unsubscribe(s) for opt-out" in line for line in run_logs(flow_run_id(poll)))
    assert_no_raw_email(lines + names + run_logs(flow_run_id(poll)), people)
