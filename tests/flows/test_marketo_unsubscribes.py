from datetime import UTC, datetime, timedelta

import pytest

from iterable_recipes.store.inbox import Inbox

pytestmark = pytest.mark.usefixtures("prefect_server")
START = datetime.now(UTC) - timedelta(hours=1)


def _seed(iterable, marketo):
    iterable.sandbox.seed_users(
        [
            {"email": "known.link@example.com", "subscribedMessageTypeIds": [101, 301]},
            {"email": "known.form@example.com", "subscribedMessageTypeIds": [101]},
            {"email": "already.out@example.com", "unsubscribedChannelIds": [1]},
        ]
    )
    for lead_id, email in [
        (1, "known.link@example.com"),
        (2, "known.form@example.com"),
        (3, "already.out@example.com"),
        (4, "stranger@example.com"),
    ]:
        marketo.sandbox.add_lead(lead_id, email)
    marketo.sandbox.add_noise(700)
    marketo.sandbox.unsubscribe(1, how="link")
    marketo.sandbox.unsubscribe(2, how="form")
    marketo.sandbox.unsubscribe(3, how="salesforce")
    marketo.sandbox.unsubscribe(4, how="link")


def test_poll_opts_out_known_people_only(iterable_standin, marketo_standin, app_database):
    from flows.marketo_unsubscribes import marketo_poll

    _seed(iterable_standin, marketo_standin)
    summary = marketo_poll(start=START)

    sandbox = iterable_standin.sandbox
    link = sandbox.user("known.link@example.com")
    form = sandbox.user("known.form@example.com")
    # The marketing email channel is left; the message types stay as each person set them (GitLab
    # Marketing dormant under the left channel, SMS Promotions still reaching them on SMS).
    assert link["unsubscribedChannelIds"] == [1] and link["subscribedMessageTypeIds"] == [101, 301]
    assert form["unsubscribedChannelIds"] == [1] and form["subscribedMessageTypeIds"] == [101]
    # Nobody is created by the opt-out path, and the already-opted-out person is not written again.
    assert sandbox.user("stranger@example.com") is None
    stats = sandbox.stats()
    assert not any(k.startswith("subscriptions") or "Subscriptions" in k for k in stats["users_created"])
    assert stats["subscription_writes"].get("already.out@example.com", 0) == 0
    assert stats["subscription_writes"]["known.link@example.com"] == 1
    assert summary["queued"] == 4

    audit = {r.lead_id: r.outcome for r in Inbox(app_database).list_audit()}
    assert audit == {
        "1": "opted_out",
        "2": "opted_out",
        "3": "already_opted_out",
        "4": "not_in_iterable",
    }


def test_an_unsubscribe_without_an_address_is_audited_and_alerted(
    iterable_standin, marketo_standin, app_database, monkeypatch
):
    import tasks.reporting
    from flows.marketo_unsubscribes import marketo_poll

    announced: list[dict] = []
    monkeypatch.setattr(tasks.reporting, "emit_event", lambda **event: announced.append(event))
    marketo_standin.sandbox.add_lead(7, "")
    marketo_standin.sandbox.unsubscribe(7, how="form")
    summary = marketo_poll(start=START)

    assert summary["lead_changes_unresolved"] == 1 and summary["queued"] == 0
    assert [r.outcome for r in Inbox(app_database).list_audit(7)] == ["unresolved"]
    alerts = [e for e in announced if e["event"] == "recipes.optouts.unresolved"]
    assert [e["payload"] for e in alerts] == [{"unresolved": 1}]


def test_second_poll_queues_nothing_new_and_writes_nothing(iterable_standin, marketo_standin, app_database):
    from flows.marketo_unsubscribes import marketo_poll

    _seed(iterable_standin, marketo_standin)
    marketo_poll(start=START)
    writes = dict(iterable_standin.sandbox.stats()["subscription_writes"])
    again = marketo_poll(start=START)
    assert again["queued"] == 0
    assert iterable_standin.sandbox.stats()["subscription_writes"] == writes


MARKETO_SECRET = "marketo-shared-secret-for-tests"


@pytest.fixture
def receiver(app_database, monkeypatch):
    import httpx

    from dev.standins.serving import serving
    from iterable_recipes.receiver.app import create_app

    monkeypatch.setenv("MARKETO_WEBHOOK_SECRET", MARKETO_SECRET)
    with serving(create_app()) as base, httpx.Client(base_url=base) as http:
        yield http


def _unsubscribe(http, lead_id, email, secret=MARKETO_SECRET, **extra):
    body = {"email": email, "leadId": str(lead_id), "unsubscribedAt": "2026-11-27T10:00:00Z"} | extra
    return http.post("/webhooks/marketo/unsubscribe", json=body, headers={"X-Recipes-Secret": secret})


def test_webhook_opt_out_and_refusals(iterable_standin, marketo_standin, app_database, receiver):
    from flows.marketo_unsubscribes import marketo_optout_drain, marketo_poll

    _seed(iterable_standin, marketo_standin)
    inbox = Inbox(app_database)
    assert _unsubscribe(receiver, 1, "known.link@example.com", secret="wrong").status_code == 401
    assert (
        receiver.post(
            "/webhooks/marketo/unsubscribe",
            content=b"{not json",
            headers={"X-Recipes-Secret": MARKETO_SECRET},
        ).status_code
        == 400
    )
    missing = receiver.post(
        "/webhooks/marketo/unsubscribe", json={"leadId": "1"}, headers={"X-Recipes-Secret": MARKETO_SECRET}
    )
    assert missing.status_code == 422 and "email" in missing.json()["error"]
    assert inbox.counts() == {}

    first = _unsubscribe(receiver, 1, "known.link@example.com")
    assert first.status_code == 202
    repeat = _unsubscribe(receiver, 1, "known.link@example.com")
    assert repeat.status_code == 200 and repeat.json()["id"] == first.json()["id"]
    # The poll sees the same lead's activities while the webhook's item waits: not queued twice.
    marketo_poll(start=START, drain=False)
    waiting = [
        item
        for item in inbox.list_items(source="marketo")
        if item.payload is not None and item.payload["leadId"] == "1"
    ]
    assert len(waiting) == 1

    marketo_optout_drain()
    link = iterable_standin.sandbox.user("known.link@example.com")
    assert 1 in link["unsubscribedChannelIds"]
    assert iterable_standin.sandbox.stats()["subscription_writes"]["known.link@example.com"] == 1
    audit = {r.lead_id: (r.source, r.outcome) for r in inbox.list_audit()}
    assert audit["1"] == ("webhook", "opted_out")


def test_an_opt_out_drain_that_finds_nothing_publishes_no_artifact(iterable_standin, app_database):
    from flows.marketo_unsubscribes import marketo_optout_drain
    from tests.flows.test_customersdot_events import _run_artifacts

    empty = marketo_optout_drain(return_state=True)
    assert empty.is_completed() and empty.result()["received"] == 0
    assert _run_artifacts(empty) == {}
