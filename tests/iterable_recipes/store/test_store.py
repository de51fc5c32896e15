from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from iterable_recipes.store import Inbox, Item, NewItem, Outcome, Released, migrate


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
    inbox.mark_delivered([by_poll.id], owner="drain")
    later = inbox.add("marketo", "webhook-3", "optout", {}, dedupe_key="lead:7")
    assert later.created, "once delivered, a new unsubscribe of the lead is queued"


def test_only_keyed_items_enter_the_open_dedupe_index(inbox: Inbox) -> None:
    """Every webhook's insert writes each index it enters: one without a dedupe key (every CustomersDot
    event) must not enter the open-dedupe index, where it could never collide anyway."""
    from sqlalchemy import text

    sqlite = inbox.is_sqlite
    query = (
        "SELECT sql FROM sqlite_master WHERE name = :name"
        if sqlite
        else "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
    )
    with inbox.engine.connect() as conn:
        definition = conn.execute(text(query), {"name": "uq_received_events_open_dedupe"}).scalar_one()
    assert "dedupe_key is not null" in " ".join(definition.lower().split())
    # Unchanged meaning: keyed items still collide while open, keyless ones never do.
    assert inbox.add("marketo", "a1", "optout", {}, dedupe_key="lead:1").created
    assert not inbox.add("marketo", "a2", "optout", {}, dedupe_key="lead:1").created
    keyless = [inbox.add("marketo", f"b{n}", "optout", {}) for n in range(2)]
    assert all(added.created for added in keyless)


def test_the_dedupe_migration_keeps_waiting_keyed_items_unique(tmp_path: Path) -> None:
    """A database holding an open keyed item before the index changed still refuses its repeat after."""
    url = f"sqlite:///{tmp_path}/recipes.db"
    migrate(url, "0003")
    before = Inbox(url)
    waiting = before.add("marketo", "a1", "optout", {}, dedupe_key="lead:9")
    before.dispose()
    migrate(url)
    after = Inbox(url)
    repeat = after.add("marketo", "a2", "optout", {}, dedupe_key="lead:9")
    assert not repeat.created and repeat.id == waiting.id
    after.dispose()


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
    assert inbox.mark_retry(added.id, "503 from Iterable", owner="a") == "retry"
    item = stored(inbox, added.id)
    assert item.status == "retry" and item.last_error == "503 from Iterable"
    assert item.next_attempt_at >= before + timedelta(seconds=9)
    assert inbox.claim("customersdot", 10, 60, "a") == [], "not due before its backoff"
    other = inbox.add("customersdot", "e2", "k", {})
    for attempt in (1, 2):
        assert [i.attempts for i in inbox.claim("customersdot", 10, 60, "a")] == [attempt]
        assert inbox.mark_retry(other.id, f"failure {attempt}", delay=0, owner="a") == "retry"
    assert inbox.claim("customersdot", 10, 60, "a")
    assert inbox.mark_retry(other.id, "failure 3", delay=0, owner="a") == "dead"
    dead = stored(inbox, other.id)
    assert dead.status == "dead" and dead.last_error is not None
    assert "max attempts (3)" in dead.last_error and "failure 3" in dead.last_error


def test_permanent_failures_dead_and_operator_retry(inbox: Inbox) -> None:
    a = inbox.add("customersdot", "a", "k", {})
    b = inbox.add("customersdot", "b", "k", {})
    inbox.claim("customersdot", 10, 60, "x")
    assert inbox.mark_dead(a.id, "400 InvalidEmailAddressError", owner="x")
    assert inbox.mark_skipped(b.id, "personal registration", owner="x")
    assert [i.id for i in inbox.list_items(status="dead")] == [a.id]
    assert inbox.retry_dead("customersdot") == 1
    assert stored(inbox, a.id).status == "pending" and stored(inbox, a.id).attempts == 0
    assert inbox.retry(b.id) is True
    assert inbox.retry(b.id) is False, "already pending"


def test_replay_sends_delivered_items_again_under_the_same_ids(inbox: Inbox) -> None:
    ids = [inbox.add("customersdot", f"e{i}", "k", {"i": i}).id for i in range(3)]
    inbox.claim("customersdot", 10, 60, "x")
    inbox.mark_delivered(ids, owner="x")
    assert inbox.replay("customersdot", datetime.now(UTC) - timedelta(minutes=1)) == 3
    again = inbox.claim("customersdot", 10, 60, "y")
    assert sorted(i.id for i in again) == ids
    assert sorted(i.source_id for i in again) == ["e0", "e1", "e2"]
    assert inbox.replay("customersdot", datetime.now(UTC) + timedelta(minutes=1)) == 0


def test_purge_drops_payloads_of_finished_items_only(inbox: Inbox) -> None:
    done = inbox.add("customersdot", "done", "k", {"email": "someone@example.com"})
    waiting = inbox.add("customersdot", "waiting", "k", {"email": "other@example.com"})
    inbox.claim("customersdot", 1, 60, "x")
    inbox.mark_delivered([done.id], owner="x")
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


def test_a_stale_drains_outcomes_are_refused_and_counted(inbox: Inbox) -> None:
    ids = [inbox.add("customersdot", f"e{i}", "k", {}).id for i in range(4)]
    inbox.claim("customersdot", 10, 0.3, "stale")
    time.sleep(0.4)
    assert len(inbox.claim("customersdot", 10, 60, "current")) == 4
    assert inbox.settle([Outcome(ids[0], "delivered")], "current").counts["delivered"] == 1
    stale = inbox.settle(
        [
            Outcome(ids[0], "dead", "400 from Iterable"),
            Outcome(ids[1], "skipped", "not in Iterable"),
            Outcome(ids[2], "retry", "503 from Iterable"),
            Outcome(ids[3], "delivered"),
        ],
        "stale",
    )
    assert stale.counts == {"delivered": 0, "retry": 0, "dead": 0, "skipped": 0, "held": 0, "refused": 4}
    assert stale.dead == []
    assert stored(inbox, ids[0]).status == "delivered", "a stale drain overwrote another's delivery"
    for item_id in ids[1:]:
        item = stored(inbox, item_id)
        assert (item.status, item.lease_owner) == ("in_flight", "current")


def test_an_outcome_needs_the_item_in_flight(inbox: Inbox) -> None:
    item_id = inbox.add("customersdot", "e1", "k", {}).id
    assert inbox.settle([Outcome(item_id, "dead", "late")], "nobody").counts["refused"] == 1
    assert stored(inbox, item_id).status == "pending", "a pending item was settled without a claim"


def test_a_released_run_gives_its_items_back_at_once_keeping_their_attempts(inbox: Inbox) -> None:
    ids = [inbox.add("customersdot", f"e{i}", "k", {}).id for i in range(3)]
    other = inbox.add("customersdot", "other", "k", {}).id
    inbox.claim("customersdot", 3, 300, "failed-run")
    inbox.claim("customersdot", 1, 300, "live-run")
    inbox.settle([Outcome(ids[0], "delivered")], "failed-run")

    released = inbox.release("failed-run", "lease released: the run Failed")
    assert released.retry == ids[1:] and released.dead == []
    assert inbox.release("failed-run", "again") == Released([], []), "nothing left to release"
    for item_id in ids[1:]:
        item = stored(inbox, item_id)
        assert (item.status, item.attempts, item.lease_owner) == ("retry", 1, None)
        assert item.last_error == "lease released: the run Failed"
    assert stored(inbox, ids[0]).status == "delivered"
    assert stored(inbox, other).lease_owner == "live-run", "another run's lease was released"
    again = inbox.claim("customersdot", 10, 300, "retried-run")
    assert [(i.id, i.attempts) for i in again] == [(ids[1], 2), (ids[2], 2)], "not due at once"

    # On its last attempt an item released is dead, as one whose lease ran out would be.
    inbox.release("retried-run", "run Cancelled")
    inbox.claim("customersdot", 10, 300, "third-run")
    last = inbox.release("third-run", "run Crashed")
    assert last.retry == [] and last.dead == [("customersdot", ids[1]), ("customersdot", ids[2])]
    dead = stored(inbox, ids[1])
    assert dead.status == "dead" and dead.last_error == "max attempts (3) reached: run Crashed"


def test_lease_holders_are_listed_per_source(inbox: Inbox) -> None:
    for source in ("customersdot", "marketo"):
        inbox.add_many([NewItem(source, f"e{i}", "k", {}) for i in range(2)])
    inbox.claim("customersdot", 1, 300, "run-a")
    inbox.claim("customersdot", 1, 300, "run-b")
    inbox.claim("marketo", 1, 300, "run-c")
    assert inbox.lease_holders("customersdot") == ["run-a", "run-b"]
    assert inbox.lease_holders("marketo") == ["run-c"]


def test_find_by_payload_matches_values_at_the_paths_newest_first(inbox: Inbox) -> None:
    added = inbox.add_many(
        [
            NewItem("customersdot", "e1", "k", {"person": {"email": " Ann@Example.com"}}),
            NewItem("customersdot", "e2", "k", {"person": {"email": "bob@example.com"}}),
            NewItem("marketo", "m1", "k", {"email": "ann@example.com"}),
            NewItem("marketo", "m2", "k", {"leadId": "7"}),  # no address at either path
        ]
    )
    paths = (("person", "email"), ("email",))

    def is_ann(value: str) -> bool:
        return value.strip().lower() == "ann@example.com"

    found = inbox.find_by_payload(paths, is_ann)
    assert [item.id for item in found] == [added[2].id, added[0].id]
    assert [item.id for item in inbox.find_by_payload(paths, is_ann, limit=1)] == [added[2].id]
    assert inbox.find_by_payload(paths, lambda value: False) == []


def test_an_item_is_the_same_built_from_a_whole_row_or_by_column_name(inbox: Inbox) -> None:
    """A claim builds items positionally from whole rows; any other row is read by column name."""
    from sqlalchemy import select

    from iterable_recipes.store.schema import received_events

    added = inbox.add("customersdot", "e1", "saas_trial_started", {"n": 1}, webhook_id="w1")
    claimed = inbox.claim("customersdot", 10, 60, "drain")
    with inbox.engine.connect() as conn:
        whole = conn.execute(select(received_events)).one()
        reordered = conn.execute(select(*reversed(received_events.columns))).one()
    assert Item.from_row(whole) == Item.from_row(reordered) == claimed[0]
    assert (claimed[0].id, claimed[0].source_id, claimed[0].webhook_id) == (added.id, "e1", "w1")
    assert claimed[0].status == "in_flight" and claimed[0].lease_owner == "drain"


def test_the_ledger_answers_for_a_whole_batch_of_addresses_at_once(inbox: Inbox) -> None:
    """Each per-batch read of the consent ledger takes a sync batch's worth of addresses (more than an
    IN list of binds could hold on old SQLite) and answers exactly for the pending, applied and lifted
    rows among them, on each backend."""
    from uuid import uuid4

    from iterable_recipes.store.ledger import Suppression

    tag = uuid4().hex[:8]  # the PostgreSQL database is shared by the session's tests
    addresses = [f"person{i}.{tag}@example.com" for i in range(1_500)]
    pending, applied, lifted = addresses[7], addresses[1_234], addresses[1_499]
    ledger = inbox.ledger
    now = datetime.now(UTC)
    with inbox.engine.begin() as conn:
        ledger.record(conn, [Suppression(a, f"lead-{a}", "marketo") for a in (pending, applied, lifted)], now)
    assert ledger.mark_applied(addresses) == 3
    with inbox.engine.begin() as conn:  # asked again: pending once more
        ledger.record(conn, [Suppression(pending, f"lead-{pending}", "marketo")], now)
    assert ledger.lift(f"lead-{lifted}") == 1

    assert ledger.pending_among(addresses) == set()  # an applied row asked again stays applied
    assert ledger.suppressed_among(reversed(addresses)) == {pending, applied}
    assert ledger.lifted_subjects([f"lead-{a}" for a in addresses]) == {f"lead-{lifted}"}
    with inbox.engine.begin() as conn:
        ledger.record(
            conn, [Suppression(lifted, f"lead-{lifted}", "marketo")], now
        )  # a lifted one asked again
    assert ledger.pending_among(addresses) == {lifted}
    assert ledger.subjects_of(addresses) == {lifted: f"lead-{lifted}"}
    assert ledger.check_later(addresses) == 1
    assert ledger.suppressed_among(addresses[:7] + addresses[8:1_234]) == set()
    assert ledger.suppressed_among([]) == set() and ledger.subjects_of([]) == {}
