from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from iterable_recipes.store import Inbox, Item, NewItem, migrate


def stored(inbox: Inbox, item_id: int) -> Item:
    """The stored item ``item_id``; fails the test when there is none."""
    item = inbox.get(item_id)
    assert item is not None, f"no stored item {item_id}"
    return item


def test_migrate_creates_the_sqlite_folder_and_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/a/b/recipes.db"
    migrate(url)
    migrate(url)
    assert (tmp_path / "a" / "b" / "recipes.db").exists()
    assert Inbox(url).counts() == {}


def test_a_repeat_by_source_id_or_webhook_id_is_stored_once(inbox: Inbox) -> None:
    first = inbox.add("customersdot", "e1", "saas_trial_started", {"n": 1}, webhook_id="w1")
    same_source_id = inbox.add("customersdot", "e1", "saas_trial_started", {"n": 2}, webhook_id="w2")
    same_webhook_id = inbox.add("customersdot", "e2", "saas_trial_started", {"n": 3}, webhook_id="w1")
    other_source = inbox.add("marketo", "e1", "optout", {"n": 4})
    assert first.created and not same_source_id.created and not same_webhook_id.created
    assert same_source_id.id == same_webhook_id.id == first.id
    assert other_source.created and other_source.id != first.id
    assert stored(inbox, first.id).payload == {"n": 1}
    assert inbox.counts() == {"customersdot": {"pending": 1}, "marketo": {"pending": 1}}


def test_add_many_keeps_order_and_spots_repeats_inside_the_batch(inbox: Inbox) -> None:
    items = [NewItem("customersdot", f"e{i % 3}", "k", {"i": i}, webhook_id=f"w{i}") for i in range(6)]
    results = inbox.add_many(items)
    assert [r.created for r in results] == [True, True, True, False, False, False]
    assert [r.id for r in results[3:]] == [r.id for r in results[:3]]


def test_a_lead_waiting_is_not_queued_twice_whichever_trigger_saw_it_first(inbox: Inbox) -> None:
    by_poll = inbox.add("marketo", "activity-1", "optout", {"via": "poll"}, dedupe_key="lead:7")
    by_webhook = inbox.add("marketo", "webhook-1", "optout", {"via": "webhook"}, dedupe_key="lead:7")
    assert not by_webhook.created and by_webhook.id == by_poll.id
    claimed = inbox.claim("marketo", 10, 60, "drain")
    assert [i.id for i in claimed] == [by_poll.id]
    again = inbox.add("marketo", "webhook-2", "optout", {}, dedupe_key="lead:7")
    assert not again.created, "an in-flight lead is still waiting"
    inbox.mark_delivered([by_poll.id])
    later = inbox.add("marketo", "webhook-3", "optout", {}, dedupe_key="lead:7")
    assert later.created, "once delivered, a new unsubscribe of the lead is queued"


def test_claim_leases_and_an_expired_lease_is_claimed_again(inbox: Inbox) -> None:
    added = inbox.add("customersdot", "e1", "k", {})
    first = inbox.claim("customersdot", 10, 0.3, "a")
    assert [(i.id, i.status, i.attempts, i.lease_owner) for i in first] == [(added.id, "in_flight", 1, "a")]
    assert inbox.claim("customersdot", 10, 60, "b") == []
    time.sleep(0.4)
    second = inbox.claim("customersdot", 10, 60, "b")
    assert [(i.id, i.attempts, i.lease_owner) for i in second] == [(added.id, 2, "b")]
    assert inbox.mark_retry(added.id, "late", owner="a") is None, "the stale drain may not overwrite"
    assert inbox.mark_delivered([added.id], owner="b") == 1
    assert stored(inbox, added.id).status == "delivered"


def test_retry_backs_off_exponentially_and_dies_after_max_attempts(inbox: Inbox) -> None:
    added = inbox.add("customersdot", "e1", "k", {})
    assert inbox.backoff(1) == 10 and inbox.backoff(2) == 20 and inbox.backoff(9) == 60
    inbox.claim("customersdot", 1, 60, "a")
    before = datetime.now(UTC)
    assert inbox.mark_retry(added.id, "503 from Iterable") == "retry"
    item = stored(inbox, added.id)
    assert item.status == "retry" and item.last_error == "503 from Iterable"
    assert item.next_attempt_at >= before + timedelta(seconds=9)
    assert inbox.claim("customersdot", 10, 60, "a") == [], "not due before its backoff"
    other = inbox.add("customersdot", "e2", "k", {})
    for attempt in (1, 2):
        assert [i.attempts for i in inbox.claim("customersdot", 10, 60, "a")] == [attempt]
        assert inbox.mark_retry(other.id, f"failure {attempt}", delay=0) == "retry"
    assert inbox.claim("customersdot", 10, 60, "a")
    assert inbox.mark_retry(other.id, "failure 3", delay=0) == "dead"
    dead = stored(inbox, other.id)
    assert dead.status == "dead" and dead.last_error is not None
    assert "max attempts (3)" in dead.last_error and "failure 3" in dead.last_error


def test_permanent_failures_dead_and_operator_retry(inbox: Inbox) -> None:
    a = inbox.add("customersdot", "a", "k", {})
    b = inbox.add("customersdot", "b", "k", {})
    inbox.claim("customersdot", 10, 60, "x")
    assert inbox.mark_dead(a.id, "400 InvalidEmailAddressError")
    assert inbox.mark_skipped(b.id, "personal registration")
    assert [i.id for i in inbox.list_items(status="dead")] == [a.id]
    assert inbox.retry_dead("customersdot") == 1
    assert stored(inbox, a.id).status == "pending" and stored(inbox, a.id).attempts == 0
    assert inbox.retry(b.id) is True
    assert inbox.retry(b.id) is False, "already pending"


def test_replay_sends_delivered_items_again_under_the_same_ids(inbox: Inbox) -> None:
    ids = [inbox.add("customersdot", f"e{i}", "k", {"i": i}).id for i in range(3)]
    inbox.claim("customersdot", 10, 60, "x")
    inbox.mark_delivered(ids)
    assert inbox.replay("customersdot", datetime.now(UTC) - timedelta(minutes=1)) == 3
    again = inbox.claim("customersdot", 10, 60, "y")
    assert sorted(i.id for i in again) == ids
    assert sorted(i.source_id for i in again) == ["e0", "e1", "e2"]
    assert inbox.replay("customersdot", datetime.now(UTC) + timedelta(minutes=1)) == 0


def test_purge_drops_payloads_of_finished_items_only(inbox: Inbox) -> None:
    done = inbox.add("customersdot", "done", "k", {"email": "someone@example.com"})
    waiting = inbox.add("customersdot", "waiting", "k", {"email": "other@example.com"})
    inbox.claim("customersdot", 1, 60, "x")
    inbox.mark_delivered([done.id])
    assert inbox.purge(timedelta(days=30)) == 0
    assert inbox.purge(timedelta(seconds=-1)) == 1
    assert stored(inbox, done.id).payload is None
    assert stored(inbox, waiting.id).payload == {"email": "other@example.com"}
    assert not inbox.add("customersdot", "done", "k", {}).created, "a purged event is still a repeat"


def test_cursor_and_audit(inbox: Inbox) -> None:
    assert inbox.get_cursor("marketo.activities") is None
    inbox.set_cursor("marketo.activities", "token-1")
    inbox.set_cursor("marketo.activities", "token-2")
    assert inbox.get_cursor("marketo.activities") == "token-2"
    inbox.add_audit("poll", 42, [1001, 1002], "not_in_iterable", {})
    inbox.add_audit("webhook", 42, [], "opted_out", {"code": "Success"})
    records = inbox.list_audit(42)
    assert [(r.source, r.outcome) for r in records] == [("webhook", "opted_out"), ("poll", "not_in_iterable")]
    assert records[1].activity_ids == ["1001", "1002"]
    assert records[0].iterable_response == {"code": "Success"}
