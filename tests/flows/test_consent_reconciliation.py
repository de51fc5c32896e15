"""The consent reconciliation over real sockets: every active suppression compared with the stand-in
Iterable, drift reported (masked) and alerted, and repaired only where the opt-out is ours to redo."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from iterable_recipes.optouts.keys import SOURCE as OPTOUTS
from iterable_recipes.optouts.keys import webhook_item
from iterable_recipes.store.inbox import Inbox
from iterable_recipes.store.schema import received_events, suppressions
from tests.integration import announced_events, flow_run_artifacts

pytestmark = pytest.mark.usefixtures("prefect_server")
MARKETING_EMAIL = 1
DRIFT_KEY = "consent-reconciliation-drift"


def _unsubscribe(inbox: Inbox, email: str, lead_id: str) -> None:
    inbox.add_many([webhook_item(lead_id, email, "2026-11-20T10:00:00+00:00")])


def _seed(sandbox: Any, email: str) -> None:
    sandbox.seed_users([{"email": email, "subscribedMessageTypeIds": [101]}])


def _user(sandbox: Any, email: str) -> Any:
    with sandbox.lock:
        sandbox.settle()
        return sandbox.find(email=email)


def _row(inbox: Inbox, email: str) -> Any:
    with inbox.engine.connect() as conn:
        return conn.execute(select(suppressions).where(suppressions.c.email == email)).one()


def _drop_open_items(inbox: Inbox) -> None:
    """The opt-out's item died before it was applied (say, a bad key at the time): only the ledger knows."""
    with inbox.engine.begin() as conn:
        conn.execute(update(received_events).values(status="dead", last_error="test: died"))


def _reconcile(repair: bool = False) -> tuple[dict[str, int], Any]:
    from flows.consent_reconciliation import consent_reconciliation

    state = consent_reconciliation(repair=repair, return_state=True)
    assert state.is_completed(), state.message
    return state.result(), state


@pytest.mark.parametrize("lookup", ["getByEmail", "export"])
def test_a_pending_opt_out_of_a_reachable_person_is_listed_then_repaired(
    iterable_standin, app_database, monkeypatch, lookup
):
    from flows.marketo_unsubscribes import marketo_optout_drain

    # Threshold 0: any ledger is "large", so the user export is the look-up.
    monkeypatch.setenv("CONSENT_EXPORT_THRESHOLD", "5000" if lookup == "getByEmail" else "0")
    inbox = Inbox(app_database)
    sandbox = iterable_standin.sandbox
    _seed(sandbox, "still.reachable@example.com")
    _unsubscribe(inbox, "Still.Reachable@Example.com", "501")
    _drop_open_items(inbox)
    announced = announced_events(monkeypatch)

    counts, state = _reconcile()
    assert counts["checked"] == counts["reachable"] == counts["not_applied"] == 1
    assert counts["repaired"] == 0
    assert inbox.counts()[OPTOUTS] == {"dead": 1}  # nothing queued without repair
    (drift,) = [e for e in announced if e["event"] == "recipes.consent.drift"]
    expected = {"reachable": 1, "not_applied": 1, "recreated": 0, "resubscribed": 0, "repaired": 0}
    assert drift["payload"] == expected  # counts only, no person
    (artifact,) = flow_run_artifacts(state, DRIFT_KEY)
    (row,) = json.loads(artifact.data)
    assert row["lead_id"] == "501" and row["status"] == "pending"
    assert row["why"] == "opt-out not applied yet" and "repair" in row["action"]
    assert "still.reachable" not in artifact.data and "@example.com" not in artifact.data
    used = {template for _, template in iterable_standin.transport.checked}
    assert ("/api/export/data.json" in used) is (lookup == "export")

    monkeypatch.setenv("CONSENT_EXPORT_THRESHOLD", "5000")  # the export allows 4 a minute: spare the wait
    repaired, _ = _reconcile(repair=True)
    assert repaired["repaired"] == 1
    assert inbox.counts()[OPTOUTS].get("pending") == 1
    assert marketo_optout_drain()["opted_out"] == 1
    assert MARKETING_EMAIL in _user(sandbox, "still.reachable@example.com").subs["unsubscribedChannelIds"]
    assert _row(inbox, "still.reachable@example.com").status == "applied"

    after, _ = _reconcile()
    assert after["reachable"] == 0 and after["opted_out"] == 1


def test_a_person_who_subscribed_again_after_the_opt_out_is_listed_and_never_repaired(
    iterable_standin, app_database, monkeypatch
):
    from flows.marketo_unsubscribes import marketo_optout_drain

    inbox = Inbox(app_database)
    sandbox = iterable_standin.sandbox
    _seed(sandbox, "came.back@example.com")
    _unsubscribe(inbox, "came.back@example.com", "502")
    assert marketo_optout_drain()["opted_out"] == 1
    with sandbox.lock:  # their own choice in Iterable's preference centre, after our opt-out
        sandbox.find(email="came.back@example.com").subs["unsubscribedChannelIds"] = []
    announced = announced_events(monkeypatch)

    counts, state = _reconcile(repair=True)
    assert counts["resubscribed"] == counts["reachable"] == 1
    assert counts["repaired"] == 0
    assert inbox.counts()[OPTOUTS] == {"delivered": 1}  # no opt-out queued
    assert _user(sandbox, "came.back@example.com").subs["unsubscribedChannelIds"] == []
    assert _row(inbox, "came.back@example.com").status == "applied"
    (row,) = json.loads(flow_run_artifacts(state, DRIFT_KEY)[0].data)
    assert row["why"] == "re-subscribed since" and row["action"] == "none: never repaired automatically"
    (drift,) = [e for e in announced if e["event"] == "recipes.consent.drift"]
    assert drift["payload"]["resubscribed"] == 1


def test_a_profile_re_created_after_the_opt_out_is_opted_out_again(iterable_standin, app_database):
    from flows.marketo_unsubscribes import marketo_optout_drain

    inbox = Inbox(app_database)
    sandbox = iterable_standin.sandbox
    _seed(sandbox, "recreated@example.com")
    _unsubscribe(inbox, "recreated@example.com", "503")
    assert marketo_optout_drain()["opted_out"] == 1
    # The opt-out was applied an hour ago; since then the profile was deleted and created anew
    # (signupDate now), without the channel our opt-out had left.
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    with inbox.engine.begin() as conn:
        conn.execute(update(suppressions).values(applied_at=an_hour_ago))
    assert sandbox.forget_user("recreated@example.com")
    _seed(sandbox, "recreated@example.com")

    counts, state = _reconcile(repair=True)
    assert counts["recreated"] == counts["repaired"] == 1
    (row,) = json.loads(flow_run_artifacts(state, DRIFT_KEY)[0].data)
    assert row["why"] == "profile re-created since the opt-out" and row["action"] == "opt-out queued"
    assert _row(inbox, "recreated@example.com").status == "pending"  # the writers' gate holds them again
    assert marketo_optout_drain()["opted_out"] == 1
    assert MARKETING_EMAIL in _user(sandbox, "recreated@example.com").subs["unsubscribedChannelIds"]
    applied = _row(inbox, "recreated@example.com")
    assert applied.status == "applied" and applied.applied_at > an_hour_ago + timedelta(minutes=30)


def test_a_person_not_in_iterable_stays_pending_and_unlisted(iterable_standin, app_database, monkeypatch):
    inbox = Inbox(app_database)
    sandbox = iterable_standin.sandbox
    _unsubscribe(inbox, "nobody.yet@example.com", "504")
    # Opted out in Iterable already (by hand, say) while the ledger still says pending.
    sandbox.seed_users([{"email": "already.out@example.com", "unsubscribedChannelIds": [MARKETING_EMAIL]}])
    _unsubscribe(inbox, "already.out@example.com", "505")
    announced = announced_events(monkeypatch)

    counts, state = _reconcile(repair=True)
    assert counts["checked"] == 2 and counts["reachable"] == 0
    assert counts["not_in_iterable"] == 1 and counts["opted_out"] == counts["marked_applied"] == 1
    assert _row(inbox, "nobody.yet@example.com").status == "pending"
    assert _row(inbox, "already.out@example.com").status == "applied"
    assert flow_run_artifacts(state, DRIFT_KEY) == []
    assert not [e for e in announced if e["event"] == "recipes.consent.drift"]
    assert _user(sandbox, "nobody.yet@example.com") is None  # nobody unknown is ever written
