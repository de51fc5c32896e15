"""A flow whose configuration is wrong fails at its start with the cause, before it claims or reads."""

from __future__ import annotations

from typing import Any

import pytest

from iterable_recipes.clients.iterable import IterableClient
from iterable_recipes.optouts.keys import SOURCE, webhook_item
from iterable_recipes.store.inbox import Inbox
from tests.integration import customersdot_event

pytestmark = pytest.mark.usefixtures("prefect_server")


def _wrong_key(iterable_standin: Any, test_parts: dict[str, Any]) -> None:
    """The flows' client now sends a key the stand-in refuses (as a mistyped ITERABLE_API_KEY would)."""
    test_parts["iterable"].close()
    test_parts["iterable"] = IterableClient("mistyped-key", base_url=iterable_standin.url)


def test_a_refused_key_fails_the_drain_before_it_claims(iterable_standin, app_database, test_parts):
    from flows.customersdot_events import customersdot_drain

    inbox = Inbox(app_database)
    event = customersdot_event()
    inbox.add("customersdot", event["id"], event["type"], event)
    _wrong_key(iterable_standin, test_parts)
    state = customersdot_drain(return_state=True)
    assert state.is_failed()
    assert "401" in (state.message or "") and "BadApiKey" in (state.message or "")
    assert inbox.counts()["customersdot"] == {"pending": 1}  # never claimed, no attempt spent


def test_a_consent_policy_iterable_disagrees_with_fails_the_opt_out_drain_before_it_claims(
    iterable_standin, app_database
):
    from flows.marketo_unsubscribes import marketo_optout_drain

    inbox = Inbox(app_database)
    inbox.add_many([webhook_item("7", "person@example.com", "2026-11-20T10:00:00+00:00")])
    sandbox = iterable_standin.sandbox
    with sandbox.lock:
        sandbox.channels[1]["name"] = "Newsletters"
    state = marketo_optout_drain(return_state=True)
    assert state.is_failed()
    assert "Newsletters" in (state.message or "")
    assert inbox.counts()[SOURCE] == {"pending": 1}


def test_a_refused_key_fails_the_sync_before_the_warehouse_diff(iterable_standin, app_database, test_parts):
    from flows.snowflake_sync import snowflake_sync

    _wrong_key(iterable_standin, test_parts)
    # No warehouse is configured at all: reaching the diff would fail differently.
    state = snowflake_sync("gitlab_marketing_contacts", return_state=True)
    assert state.is_failed()
    assert "401" in (state.message or "")
