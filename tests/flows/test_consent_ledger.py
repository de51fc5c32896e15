"""The consent ledger over real sockets: an unsubscribe is applied as soon as the person exists, whoever
creates them, and no custom event of a suppressed person goes out before the opt-out is in place."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from iterable_recipes.clients.iterable_models import event_id_from
from iterable_recipes.optouts.decisions import WRITTEN_TRIES
from iterable_recipes.optouts.keys import SOURCE as OPTOUTS
from iterable_recipes.optouts.keys import webhook_item
from iterable_recipes.store.inbox import Inbox
from iterable_recipes.store.schema import received_events, suppressions
from tests.integration import customersdot_event

pytestmark = pytest.mark.usefixtures("prefect_server")
MARKETING_EMAIL = 1


@pytest.fixture(autouse=True)
def _short_written_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """An opt-out queued after our own write is due (and retried) 0.2 s later here, not 5 s."""
    monkeypatch.setenv("CONSENT_WRITTEN_RETRY_SECONDS", "0.2")


def _unsubscribe(inbox: Inbox, email: str, lead_id: str = "77") -> None:
    inbox.add_many([webhook_item(lead_id, email, "2026-11-20T10:00:00+00:00")])


def _signup(email: str) -> dict[str, Any]:
    """A CustomersDot trial start of ``email`` (any custom event may start a Journey)."""
    event = customersdot_event()
    event["person"]["email"] = email
    return event


def _user(sandbox: Any, email: str) -> Any:
    with sandbox.lock:
        sandbox.settle()
        return sandbox.find(email=email)


def _due_now(inbox: Inbox, table: Any, column: str) -> None:
    """Bring every waiting row's next time to now (the test's stand-in for the clock moving on)."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    with inbox.engine.begin() as conn:
        conn.execute(update(table).where(getattr(table.c, column).is_not(None)).values({column: past}))


def test_unsubscribe_first_then_signup_opts_the_person_out_before_any_event(iterable_standin, app_database):
    from flows.customersdot_events import customersdot_drain
    from flows.marketo_unsubscribes import marketo_optout_drain

    inbox = Inbox(app_database)
    sandbox = iterable_standin.sandbox
    # Padded and mixed case as Marketo may send it: the ledger keys the normalised address.
    _unsubscribe(inbox, "  Late.Signup@Example.com ")
    first = marketo_optout_drain()
    assert first["not_in_iterable"] == 1
    assert inbox.ledger.counts() == {"pending": 1, "applied": 0, "lifted": 0, "pending_existence": 1}

    # The person signs up: the chain creates them and would track "SaaS Trials" (a Journey's start).
    event = _signup("late.signup@example.com")
    inbox.add("customersdot", event["id"], event["type"], event)
    chain = customersdot_drain()
    assert chain["held"] == 1 and chain["delivered"] == 0
    assert _user(sandbox, "late.signup@example.com") is not None  # the profile was written
    assert event_id_from("cdot", event["id"]) not in sandbox.events()  # the event was not
    assert inbox.counts()[OPTOUTS].get("pending", 0) == 1  # the opt-out queued right after the write

    second = marketo_optout_drain()
    assert second["opted_out"] == 1
    assert MARKETING_EMAIL in _user(sandbox, "late.signup@example.com").subs["unsubscribedChannelIds"]
    assert inbox.ledger.counts()["applied"] == 1

    _due_now(inbox, received_events, "next_attempt_at")
    after = customersdot_drain()
    assert after["delivered"] == 1
    assert event_id_from("cdot", event["id"]) in sandbox.events()
    (item,) = inbox.list_items(source="customersdot")
    assert item.attempts == 1  # the hold spent none


def test_a_person_created_by_anything_else_is_found_on_a_later_look(iterable_standin, app_database):
    from flows.marketo_unsubscribes import marketo_optout_drain

    inbox = Inbox(app_database)
    sandbox = iterable_standin.sandbox
    _unsubscribe(inbox, "form.signup@example.com", lead_id="88")
    assert marketo_optout_drain()["not_in_iterable"] == 1
    # Created by an Iterable form or an import, not by the project: no write of ours to react to.
    sandbox.seed_users([{"email": "form.signup@example.com", "subscribedMessageTypeIds": [101]}])
    assert marketo_optout_drain()["requeued"] == 0  # not due yet: the look waits for its backoff
    _due_now(inbox, suppressions, "next_check_at")
    later = marketo_optout_drain()
    assert later["requeued"] == 1 and later["opted_out"] == 1
    assert MARKETING_EMAIL in _user(sandbox, "form.signup@example.com").subs["unsubscribedChannelIds"]
    assert inbox.ledger.counts()["applied"] == 1


def test_an_applied_opt_out_is_never_applied_again_by_our_writes(iterable_standin, app_database):
    from flows.customersdot_events import customersdot_drain
    from flows.marketo_unsubscribes import marketo_optout_drain

    inbox = Inbox(app_database)
    sandbox = iterable_standin.sandbox
    sandbox.seed_users([{"email": "known@example.com", "subscribedMessageTypeIds": [101]}])
    _unsubscribe(inbox, "known@example.com", lead_id="99")
    assert marketo_optout_drain()["opted_out"] == 1
    # The person subscribes again in Iterable itself (their choice, after our opt-out).
    with sandbox.lock:
        sandbox.find(email="known@example.com").subs["unsubscribedChannelIds"] = []
    event = _signup("known@example.com")
    inbox.add("customersdot", event["id"], event["type"], event)
    assert customersdot_drain()["delivered"] == 1
    assert inbox.counts()[OPTOUTS] == {"delivered": 1}  # nothing queued again
    assert _user(sandbox, "known@example.com").subs["unsubscribedChannelIds"] == []


def test_a_held_event_dies_with_consent_hold_when_the_opt_out_never_lands(
    iterable_standin, app_database, monkeypatch
):
    from flows.customersdot_events import customersdot_drain

    monkeypatch.setenv("CONSENT_HOLD_SECONDS", "0")
    inbox = Inbox(app_database)
    _unsubscribe(inbox, "never.out@example.com", lead_id="66")
    event = _signup("never.out@example.com")
    inbox.add("customersdot", event["id"], event["type"], event)
    summary = customersdot_drain()
    assert summary["dead"] == 1 and summary["delivered"] == 0
    (item,) = inbox.list_items(source="customersdot")
    assert item.status == "dead" and "consent-hold" in (item.last_error or "")


def test_a_resubscription_in_marketo_lifts_that_leads_suppression_only(
    iterable_standin, marketo_standin, app_database
):
    from flows.marketo_unsubscribes import marketo_optout_drain, marketo_poll

    inbox = Inbox(app_database)
    iterable_standin.sandbox.seed_users(
        [{"email": "changed.mind@example.com", "subscribedMessageTypeIds": [101]}]
    )
    marketo = marketo_standin.sandbox
    marketo.add_lead(501, "changed.mind@example.com")
    marketo.add_lead(502, "changed.mind@example.com")  # a duplicate lead of the same person
    start = datetime.now(UTC) - timedelta(minutes=5)
    marketo.unsubscribe(501, how="form")
    assert marketo_poll(start=start, drain=False)["lead_changes_queued"] == 1
    marketo.resubscribe(501)
    assert marketo_poll(drain=False)["lead_changes_lifted"] == 1
    drained = marketo_optout_drain()
    assert drained["lifted"] == 1 and drained["opted_out"] == 0
    user = _user(iterable_standin.sandbox, "changed.mind@example.com")
    assert MARKETING_EMAIL not in user.subs["unsubscribedChannelIds"]  # lifting wrote nothing
    assert inbox.ledger.counts()["lifted"] == 1

    # The other lead unsubscribes: the address is suppressed again, through that lead.
    marketo.unsubscribe(502, how="form")
    marketo_poll(drain=False)
    assert inbox.ledger.pending_among(["changed.mind@example.com"]) == {"changed.mind@example.com"}
    assert marketo_optout_drain()["opted_out"] == 1


def test_every_attempt_leaves_its_own_audit_record_begun_before_the_write(iterable_standin, app_database):
    from flows.marketo_unsubscribes import marketo_optout_drain

    inbox = Inbox(app_database)
    sandbox = iterable_standin.sandbox
    sandbox.seed_users([{"email": "twice@example.com", "subscribedMessageTypeIds": [101]}])
    _unsubscribe(inbox, "twice@example.com", lead_id="55")
    (item,) = inbox.list_items(source=OPTOUTS)
    # A crash right after the record was begun leaves it, "attempting"; beginning it again adds nothing.
    claimed = inbox.claim(OPTOUTS, limit=1, owner="crashed-run")
    inbox.begin_attempts([(claimed[0], "webhook")])
    inbox.begin_attempts([(claimed[0], "webhook")])
    assert [(r.attempt, r.outcome) for r in inbox.list_audit(lead_id="55")] == [(1, "attempting")]
    inbox.release("crashed-run", "the run crashed")

    # Iterable refuses the next write once: that attempt is audited failed, the one after opted out.
    sandbox.set_faults(endpoint="users/bulkUpdateSubscriptions", fail_next=[503, 503, 503, 503, 503])
    marketo_optout_drain()
    sandbox.clear_faults()
    _due_now(inbox, received_events, "next_attempt_at")
    assert marketo_optout_drain()["opted_out"] == 1
    records = sorted((r.attempt, r.outcome) for r in inbox.list_audit(lead_id="55"))
    assert records[0] == (1, "attempting") and records[-1][1] == "opted_out"
    assert ("failed") in {outcome for _, outcome in records[1:-1]}
    assert all(r.item_id == item.id for r in inbox.list_audit(lead_id="55"))


def test_a_suppressed_lead_that_changes_its_address_has_the_new_one_suppressed(
    iterable_standin, marketo_standin, app_database
):
    from flows.marketo_unsubscribes import marketo_optout_drain, marketo_poll

    inbox = Inbox(app_database)
    sandbox = iterable_standin.sandbox
    sandbox.seed_users(
        [
            {"email": "old.address@example.com", "subscribedMessageTypeIds": [101]},
            {"email": "new.address@example.com", "subscribedMessageTypeIds": [101]},
        ]
    )
    marketo = marketo_standin.sandbox
    marketo.add_lead(601, "old.address@example.com")
    marketo.add_lead(602, "bystander@example.com")
    start = datetime.now(UTC) - timedelta(minutes=5)
    marketo.unsubscribe(601, how="form")
    marketo_poll(start=start, drain=False)
    assert marketo_optout_drain()["opted_out"] == 1
    marketo.change_email(601, " New.Address@Example.com")
    marketo.change_email(602, "elsewhere@example.com")  # not suppressed: nothing follows it
    assert marketo_poll(drain=False)["lead_changes_new_addresses"] == 1
    assert marketo_optout_drain()["opted_out"] == 1
    assert MARKETING_EMAIL in _user(sandbox, "new.address@example.com").subs["unsubscribedChannelIds"]
    assert inbox.ledger.pending_among(["elsewhere@example.com"]) == set()


def _lookups(sandbox: Any) -> int:
    return sum(sandbox.stats()["requests"].get("users/getByEmail", {}).values())


@pytest.fixture
def apply_after_first_lookup(iterable_standin: Any) -> Iterator[threading.Event]:
    """Iterable applies profile writes only when told (a long profile delay); set the event, and the
    writes pending then are applied right after the next getByEmail is answered."""
    sandbox = iterable_standin.sandbox
    sandbox.set_options(profile_delay_seconds=3600)
    armed, stop = threading.Event(), threading.Event()

    def watch() -> None:
        armed.wait()
        seen = _lookups(sandbox)
        while not stop.is_set() and _lookups(sandbox) == seen:
            stop.wait(0.01)
        sandbox.flush()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    yield armed
    stop.set()
    armed.set()
    watcher.join(timeout=5)


def _sign_up_after_unsubscribe(inbox: Inbox, email: str, lead_id: str) -> dict[str, Any]:
    """Unsubscribed first (not in Iterable: the ledger row waits), then created by the chain, whose
    profile write Iterable has accepted but not applied; the event is held."""
    from flows.customersdot_events import customersdot_drain
    from flows.marketo_unsubscribes import marketo_optout_drain

    _unsubscribe(inbox, email, lead_id=lead_id)
    assert marketo_optout_drain()["not_in_iterable"] == 1
    event = _signup(email)
    inbox.add("customersdot", event["id"], event["type"], event)
    assert customersdot_drain()["held"] == 1
    return event


def test_an_opt_out_after_our_write_is_retried_until_iterable_shows_the_person(
    iterable_standin, app_database, apply_after_first_lookup
):
    from flows.customersdot_events import customersdot_drain
    from flows.marketo_unsubscribes import marketo_optout_drain

    inbox = Inbox(app_database)
    sandbox = iterable_standin.sandbox
    event = _sign_up_after_unsubscribe(inbox, "slow.apply@example.com", "55")
    assert sandbox.user("slow.apply@example.com") is None  # accepted, not applied yet

    apply_after_first_lookup.set()
    drained = marketo_optout_drain()
    # The look right after our write found nobody; the run tried again (not a minute's backoff later).
    assert drained["not_in_iterable"] >= 1 and drained["opted_out"] == 1
    outcomes = [r.outcome for r in reversed(inbox.list_audit(lead_id="55")) if r.source == "ledger"]
    assert outcomes[0] == "not_in_iterable" and outcomes[-1] == "opted_out"
    assert set(outcomes[:-1]) == {"not_in_iterable"}
    with inbox.engine.connect() as conn:
        (row,) = conn.execute(suppressions.select()).all()
    assert row.status == "applied" and row.checks == 1  # only the look before the person existed

    _due_now(inbox, received_events, "next_attempt_at")
    assert customersdot_drain()["delivered"] == 1
    kinds = [w["kind"] for w in sandbox.write_history("slow.apply@example.com")]
    assert kinds == ["subscriptions", "event"]  # no custom event before the opt-out
    assert event_id_from("cdot", event["id"]) in sandbox.events()


def test_an_opt_out_after_our_write_falls_back_to_the_ledger_after_its_tries(iterable_standin, app_database):
    from flows.marketo_unsubscribes import marketo_optout_drain

    inbox = Inbox(app_database)
    iterable_standin.sandbox.set_options(profile_delay_seconds=3600)  # never applied in this test
    _sign_up_after_unsubscribe(inbox, "never.applied@example.com", "44")
    drained = marketo_optout_drain()
    assert drained["not_in_iterable"] == WRITTEN_TRIES and drained["opted_out"] == 0
    (item,) = [i for i in inbox.list_items(source=OPTOUTS) if i.payload and i.payload["trigger"] == "ledger"]
    assert item.status == "skipped"
    with inbox.engine.connect() as conn:
        (row,) = conn.execute(suppressions.select()).all()
    assert row.status == "pending" and row.checks == 2 and row.next_check_at is not None
