"""The poll's unsubscribes reach the opt-out under the normalised address, over real sockets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from iterable_recipes.optouts.consent import DEFAULT_CONSENT_POLICY_PATH, load_consent_policy
from iterable_recipes.optouts.decisions import checked_policy, item_email, opt_out_people
from iterable_recipes.optouts.keys import SOURCE
from iterable_recipes.optouts.poll import STREAMS, poll_stream
from iterable_recipes.store import Inbox
from tests.integration import IterableStandIn, MarketoStandIn

START = datetime.now(UTC) - timedelta(hours=1)

# How Marketo hands back addresses typed or pasted with padding: space, tab, NBSP, and mixed case.
PADDED = {
    1: (" space@example.com", "space@example.com"),
    2: ("tab@example.com\t", "tab@example.com"),
    3: ("\u00a0NBSP@Example.com\u00a0", "nbsp@example.com"),
}


@pytest.mark.parametrize("how", ["link", "form"])
def test_a_padded_marketo_email_is_opted_out_under_its_normalised_address(
    iterable_standin: IterableStandIn,
    marketo_standin: MarketoStandIn,
    app_database: str,
    test_parts: dict[str, Any],
    how: str,
) -> None:
    iterable_standin.sandbox.seed_users(
        [{"email": clean, "subscribedMessageTypeIds": [101]} for _, clean in PADDED.values()]
    )
    for lead_id, (raw, _) in PADDED.items():
        marketo_standin.sandbox.add_lead(lead_id, raw)
        marketo_standin.sandbox.unsubscribe(lead_id, how=how)
    inbox = Inbox(app_database)
    with test_parts["marketo"]() as marketo:
        for stream in STREAMS:
            poll_stream(marketo, inbox, stream, START)

    items = inbox.claim(SOURCE, limit=10)
    assert sorted(item_email(i) for i in items) == sorted(clean for _, clean in PADDED.values())

    client = test_parts["iterable"]
    policy = checked_policy(client, load_consent_policy(DEFAULT_CONSENT_POLICY_PATH))
    decisions = opt_out_people(client, policy, [item_email(i) for i in items], additive=False)
    assert [d.outcome for d in decisions] == ["opted_out"] * len(PADDED)
    for _, clean in PADDED.values():
        assert 1 in iterable_standin.sandbox.user(clean)["unsubscribedChannelIds"]
    # Nobody new appeared under a padded address.
    assert len(iterable_standin.sandbox.users()) == len(PADDED)


def test_the_decision_looks_up_the_normalised_address(
    iterable_standin: IterableStandIn, test_parts: dict[str, Any]
) -> None:
    iterable_standin.sandbox.seed_users([{"email": "ada@example.com", "subscribedMessageTypeIds": [101]}])
    client = test_parts["iterable"]
    policy = checked_policy(client, load_consent_policy(DEFAULT_CONSENT_POLICY_PATH))
    decisions = opt_out_people(client, policy, ["\tAda@Example.COM\u2003"], additive=False)
    assert [d.outcome for d in decisions] == ["opted_out"]
    assert 1 in iterable_standin.sandbox.user("ada@example.com")["unsubscribedChannelIds"]


def test_a_lead_the_poll_cannot_resolve_is_audited_and_counted_never_skipped_silently(
    marketo_standin: MarketoStandIn, app_database: str, test_parts: dict[str, Any]
) -> None:
    marketo_standin.sandbox.add_lead(1, "")  # no address: nothing to opt out, but the promise is kept
    marketo_standin.sandbox.add_lead(2, "gone@example.com")
    marketo_standin.sandbox.add_lead(3, " kept@example.com")
    for lead_id in (1, 2, 3):
        marketo_standin.sandbox.unsubscribe(lead_id, how="form")
    marketo_standin.sandbox.delete_lead(2)  # deleted (or merged away) before the poll read it
    inbox = Inbox(app_database)
    with test_parts["marketo"]() as marketo:
        counts = poll_stream(marketo, inbox, "lead_changes", START)
        # The same page read again (a poll killed before its cursor moved) records nothing twice.
        inbox.set_cursor("marketo.lead_changes", marketo.get_paging_token(START))
        again = poll_stream(marketo, inbox, "lead_changes", START)

    assert (counts["queued"], counts["unresolved"]) == (1, 2)
    assert again["unresolved"] == 2
    unresolved = {r.lead_id: r for r in inbox.list_audit() if r.outcome == "unresolved"}
    assert sorted(unresolved) == ["1", "2"]
    assert len(inbox.list_audit()) == 2
    assert unresolved["1"].iterable_response == {"reason": "the lead has no email address"}
    assert unresolved["2"].iterable_response == {"reason": "the lead was not found (deleted or merged)"}
