"""The diff in SQL: what each plan stages, what accepting batches records, and what leaves the state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dev.warehouse import MODEL_TABLE, add_rows, mutate, picked_emails, remove_rows
from iterable_recipes.sync import (
    accept_all,
    accept_batch,
    finish_run,
    iter_batches,
    merge_answers,
    plan_changes,
    sample_changes,
)
from iterable_recipes.sync.definitions import SyncDefinition
from tests.iterable_recipes.sync.conftest import BATCH, STATE, scalar, send_all


def plan(conn: Any, defn: SyncDefinition, run_id: str, **kw: Any):
    kw.setdefault("batch_size", BATCH)
    return plan_changes(conn, defn, run_id, state_schema=STATE, **kw)


def test_first_plan_is_every_row_then_nothing_after_accepting(seeded: Any, gitlab: SyncDefinition) -> None:
    first = plan(seeded, gitlab, "r1")
    assert (first.new, first.changed, first.to_send, first.batches) == (2_000, 0, 2_000, 4)
    read = send_all(seeded, gitlab, "r1")
    assert len(read) == len(set(read)) == 2_000
    counts = finish_run(seeded, gitlab, "r1", state_schema=STATE)
    assert (counts.accepted, counts.rejected, counts.status) == (2_000, 0, "succeeded")
    assert scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.SYNC_SNAPSHOT") == 2_000
    second = plan(seeded, gitlab, "r2")
    assert (second.to_send, second.unchanged, second.batches) == (0, 2_000, 0)
    assert list(iter_batches(seeded, gitlab, "r2", state_schema=STATE)) == []


def test_mutating_one_percent_stages_exactly_those_rows(seeded: Any, gitlab: SyncDefinition) -> None:
    plan(seeded, gitlab, "r1")
    accept_all(seeded, gitlab, "r1", state_schema=STATE)
    expected = picked_emails(seeded, 0.01, seed=3)
    assert mutate(seeded, 0.01, seed=3) == len(expected) > 0
    summary = plan(seeded, gitlab, "r2")
    assert (summary.changed, summary.new, summary.unchanged) == (len(expected), 0, 2_000 - len(expected))
    assert set(send_all(seeded, gitlab, "r2")) == expected
    assert plan(seeded, gitlab, "r3").to_send == 0


def test_batches_are_ready_for_iterable(seeded: Any, gitlab: SyncDefinition) -> None:
    plan(seeded, gitlab, "r1", batch_size=250)
    batches = list(iter_batches(seeded, gitlab, "r1", state_schema=STATE, fetch_size=333))
    assert [b.batch_no for b in batches] == list(range(8))
    assert all(len(b) == 250 for b in batches)
    item = next(i for b in batches for i in b.items if i["email"] == "user4@example.com")
    data = item["dataFields"]
    assert set(item) == {"email", "dataFields"}  # email-keyed: no preferUserId, nothing else
    assert data["current_member_count"] == 5 and data["namespace_id"] == 1_000_004
    assert data["gitlab_plan_is_paid"] is False and data["is_setup_for_company"] is True
    assert data["created_at"] == "2025-01-01 00:04:00 +00:00"
    assert data["namespaces"] == [
        {
            "NAMESPACE_ID": 1_000_004,
            "GITLAB_PLAN_TITLE": "Free",
            "IS_SETUP_FOR_COMPANY": True,
            "CURRENT_MEMBER_COUNT": 5,
        }
    ]
    assert "trial_start_date" not in data  # NULL and send_nulls is off: Iterable keeps what it has


def test_rejected_keys_come_back_until_accepted(seeded: Any, gitlab: SyncDefinition) -> None:
    plan(seeded, gitlab, "r1")
    bad = {"user7@example.com": "Invalid email: user7@example.com", "user1999@example.com": "type mismatch"}
    send_all(seeded, gitlab, "r1", rejected=bad)
    counts = finish_run(seeded, gitlab, "r1", state_schema=STATE)
    assert (counts.accepted, counts.rejected) == (1_998, 2)
    stored = scalar(seeded, f"SELECT REASON FROM {STATE}.SYNC_REJECTED WHERE IDENTITY = 'user7@example.com'")
    assert "user7@example.com" not in stored and "u***@e***.com" in stored

    again = plan(seeded, gitlab, "r2")
    assert (again.rejected_retry, again.to_send) == (2, 2)
    send_all(seeded, gitlab, "r2", rejected={"user7@example.com": "still bad"})
    attempts = scalar(
        seeded, f"SELECT ATTEMPTS FROM {STATE}.SYNC_REJECTED WHERE IDENTITY = 'user7@example.com'"
    )
    assert attempts == 2
    third = plan(seeded, gitlab, "r3")
    assert (third.rejected_retry, third.to_send) == (1, 1)
    send_all(seeded, gitlab, "r3")
    assert scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.SYNC_REJECTED") == 0
    assert plan(seeded, gitlab, "r4").to_send == 0


def test_run_stopped_after_batch_k_loses_nothing(seeded: Any, gitlab: SyncDefinition) -> None:
    plan(seeded, gitlab, "r1")
    accepted = send_all(seeded, gitlab, "r1", stop_after=1)  # batches 0..1 accepted, then the crash
    assert len(accepted) == 1_000
    # Batch 2 was read (in flight) but never accepted: it must come back, with everything after it.
    resumed = plan(seeded, gitlab, "r2")
    assert (resumed.new, resumed.to_send) == (1_000, 1_000)
    rest = send_all(seeded, gitlab, "r2")
    assert set(rest).isdisjoint(accepted) and len(set(rest) | set(accepted)) == 2_000
    assert plan(seeded, gitlab, "r3").to_send == 0


def test_accepting_a_batch_twice_is_harmless(seeded: Any, gitlab: SyncDefinition) -> None:
    plan(seeded, gitlab, "r1")
    for _ in range(2):
        accept_batch(seeded, gitlab, "r1", 0, state_schema=STATE)
    assert scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.SYNC_SNAPSHOT") == 0  # only in the run's log
    merge_answers(seeded, gitlab, "r1", STATE)
    merge_answers(seeded, gitlab, "r1", STATE)  # merging again is harmless: the log was emptied
    assert scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.SYNC_SNAPSHOT") == 500
    assert plan(seeded, gitlab, "r2").to_send == 1_500


def test_null_and_duplicate_identities_are_counted_and_never_sent(
    seeded: Any, gitlab: SyncDefinition
) -> None:
    cur = seeded.cursor()
    cur.execute(f"UPDATE {MODEL_TABLE} SET EMAIL_ADDRESS = NULL WHERE USER_ID < 3")
    cur.execute(f"UPDATE {MODEL_TABLE} SET EMAIL_ADDRESS = '  ' WHERE USER_ID = 3")
    # Two spellings of one address are one person to Iterable.
    cur.execute(f"UPDATE {MODEL_TABLE} SET EMAIL_ADDRESS = 'User10@Example.com' WHERE USER_ID = 11")
    summary = plan(seeded, gitlab, "r1")
    assert (summary.null_identities, summary.duplicate_rows, summary.duplicate_identities) == (4, 2, 1)
    assert (summary.rows_in_model, summary.to_send) == (2_000, 1_994)
    sent = send_all(seeded, gitlab, "r1")
    assert "user10@example.com" not in sent and None not in sent and len(sent) == 1_994
    counts = finish_run(seeded, gitlab, "r1", state_schema=STATE)
    assert (counts.duplicates, counts.null_identities) == (2, 4)


def test_rows_that_left_the_model_leave_the_state(seeded: Any, gitlab: SyncDefinition) -> None:
    plan(seeded, gitlab, "r1")
    send_all(
        seeded,
        gitlab,
        "r1",
        rejected={"user5@example.com": "bad"},
        not_found={"user6@example.com"},
    )
    gone = picked_emails(seeded, 0.02, seed=1) | {"user5@example.com", "user6@example.com"}
    assert remove_rows(seeded, 0.02, seed=1) > 0
    cur = seeded.cursor()
    cur.execute(f"DELETE FROM {MODEL_TABLE} WHERE USER_ID IN (5, 6)")
    summary = plan(seeded, gitlab, "r2")
    # user5 (rejected) and user6 (not in Iterable) were never accepted, so they had no snapshot row.
    assert summary.removed_from_state == len(gone) - 2
    for name in ("SYNC_SNAPSHOT", "SYNC_REJECTED", "SYNC_NOT_IN_ITERABLE"):
        listed = ", ".join(repr(e) for e in sorted(gone))
        left = scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.{name} WHERE IDENTITY IN ({listed})")
        assert left == 0, name
    assert scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.SYNC_SNAPSHOT") == 2_000 - len(gone)
    assert summary.to_send == 0
    add_rows(seeded, 5, start=20_000)
    assert plan(seeded, gitlab, "r3").new == 5


def test_not_in_iterable_waits_for_interval_or_change(seeded: Any, gitlab: SyncDefinition) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    plan(seeded, gitlab, "r1", now=t0)
    missing = {"user1@example.com", "user2@example.com"}
    send_all(seeded, gitlab, "r1", not_found=missing)
    assert finish_run(seeded, gitlab, "r1", state_schema=STATE).not_in_iterable == 2
    # The accept stamps "now" as wall-clock time; plan a little later and well within the interval.
    soon = datetime.now(UTC) + timedelta(hours=1)
    waiting = plan(seeded, gitlab, "r2", now=soon)
    assert (waiting.to_send, waiting.not_found_waiting, waiting.unchanged) == (0, 2, 1_998)
    cur = seeded.cursor()
    cur.execute(f"UPDATE {MODEL_TABLE} SET GLM_CONTENT = 'new' WHERE USER_ID = 1")
    changed = plan(seeded, gitlab, "r3", now=soon)
    assert (changed.changed, changed.not_found_waiting) == (1, 1)
    later = soon + timedelta(hours=gitlab.not_in_iterable_retry_hours)
    due = plan(seeded, gitlab, "r4", now=later)
    assert (due.not_found_retry, due.changed, due.to_send) == (1, 1, 2)
    send_all(seeded, gitlab, "r4")
    assert scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.SYNC_NOT_IN_ITERABLE") == 0


def test_dry_run_touches_no_state_and_samples_masked(seeded: Any, gitlab: SyncDefinition) -> None:
    plan(seeded, gitlab, "r1")
    accept_all(seeded, gitlab, "r1", state_schema=STATE)
    remove_rows(seeded, 0.01, seed=0)
    mutate(seeded, 0.01, seed=5_000)
    snapshot_before = scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.SYNC_SNAPSHOT")
    dry = plan(seeded, gitlab, "dry-1", dry_run=True)
    assert dry.dry_run and dry.removed_from_state == 0 and dry.changed > 0
    assert scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.SYNC_SNAPSHOT") == snapshot_before
    sample = sample_changes(seeded, "dry-1", 5, state_schema=STATE)
    assert len(sample) == 5 and all(s["reason"] == "changed" for s in sample)
    assert all(s["identity"] == "u***@e***.com" for s in sample)
    counts = finish_run(seeded, gitlab, "dry-1", state_schema=STATE)
    assert counts.status == "dry_run" and counts.changed == dry.changed
    with pytest.raises(Exception, match=r"(?i)does not exist|not found"):
        sample_changes(seeded, "dry-1", 5, state_schema=STATE)  # finish_run dropped the staging table


def test_mapping_change_resends_every_row(seeded: Any, gitlab: SyncDefinition) -> None:
    plan(seeded, gitlab, "r1")
    accept_all(seeded, gitlab, "r1", state_schema=STATE)
    fields = dict(gitlab.fields)
    fields.pop("LIST_OF_STAGES")
    narrower = gitlab.model_copy(update={"fields": fields})
    assert plan(seeded, narrower, "r2").changed == 2_000


def test_bad_run_ids_are_refused(seeded: Any, gitlab: SyncDefinition) -> None:
    with pytest.raises(ValueError, match="run_id"):
        plan(seeded, gitlab, "x; DROP TABLE y")


def test_several_batches_are_accepted_in_one_call(seeded: Any, gitlab: SyncDefinition) -> None:
    plan(seeded, gitlab, "r1")
    batches = {b.batch_no: b for b in iter_batches(seeded, gitlab, "r1", state_schema=STATE)}
    bad, missing = batches[2].identities[5], batches[0].identities[7]
    accept_batch(seeded, gitlab, "r1", [], state_schema=STATE)  # nothing finished: nothing recorded
    assert scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.SYNC_SNAPSHOT") == 0
    accept_batch(
        seeded, gitlab, "r1", [2, 0], rejected={bad: "type mismatch"}, not_found={missing}, state_schema=STATE
    )
    merge_answers(seeded, gitlab, "r1", STATE)
    assert scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.SYNC_SNAPSHOT") == 2 * BATCH - 2
    assert scalar(seeded, f"SELECT IDENTITY FROM {STATE}.SYNC_REJECTED") == bad
    assert scalar(seeded, f"SELECT IDENTITY FROM {STATE}.SYNC_NOT_IN_ITERABLE") == missing
    accept_batch(seeded, gitlab, "r1", (1, 3, 2), state_schema=STATE)  # 2 again: now accepted in full
    counts = finish_run(seeded, gitlab, "r1", state_schema=STATE)
    assert (counts.accepted, counts.rejected, counts.not_in_iterable) == (1_999, 0, 1)
    assert plan(seeded, gitlab, "r2").to_send == 0


def test_pages_of_whole_batches_read_the_same_as_one_page(seeded: Any, gitlab: SyncDefinition) -> None:
    plan(seeded, gitlab, "r1", batch_size=300)
    one = list(iter_batches(seeded, gitlab, "r1", state_schema=STATE, page_rows=10_000))
    paged = list(iter_batches(seeded, gitlab, "r1", state_schema=STATE, page_rows=700, fetch_size=128))
    tiny = list(iter_batches(seeded, gitlab, "r1", state_schema=STATE, page_rows=1))
    assert (
        [b.batch_no for b in one]
        == [b.batch_no for b in paged]
        == [b.batch_no for b in tiny]
        == list(range(7))
    )
    assert [len(b) for b in paged] == [300] * 6 + [200]
    assert [b.items for b in one] == [b.items for b in paged] == [b.items for b in tiny]
    assert [b.hashes for b in one] == [b.hashes for b in paged]


def test_rows_are_sent_as_planned_and_a_later_change_is_sent_next_run(
    seeded: Any, gitlab: SyncDefinition
) -> None:
    plan(seeded, gitlab, "r1")
    cur = seeded.cursor()
    cur.execute(f"UPDATE {MODEL_TABLE} SET GLM_CONTENT = 'after-plan' WHERE USER_ID = 4")
    sent = [i for b in iter_batches(seeded, gitlab, "r1", state_schema=STATE) for i in b.items]
    item = next(i for i in sent if i["email"] == "user4@example.com")
    assert item["dataFields"].get("glm_content") != "after-plan"  # the planned value, which the hash covers
    send_all(seeded, gitlab, "r1")
    again = plan(seeded, gitlab, "r2")
    assert (again.changed, again.to_send) == (1, 1)
    (batch,) = iter_batches(seeded, gitlab, "r2", state_schema=STATE)
    assert batch.items[0]["dataFields"]["glm_content"] == "after-plan"


class _Recording:
    """A connection whose cursors note every statement they run."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.statements: list[str] = []

    def cursor(self) -> Any:
        cur, statements = self.conn.cursor(), self.statements
        run = cur.execute

        def execute(sql: str, params: Any = None) -> Any:
            statements.append(sql)
            return run(sql, params) if params is not None else run(sql)

        cur.execute = execute
        return cur


def test_accepting_a_batch_appends_to_the_run_log_only(seeded: Any, gitlab: SyncDefinition) -> None:
    plan(seeded, gitlab, "r1")
    batch = next(iter(iter_batches(seeded, gitlab, "r1", state_schema=STATE)))
    recording = _Recording(seeded)
    accept_batch(
        recording, gitlab, "r1", batch.batch_no,
        rejected={batch.identities[0]: "bad"}, not_found={batch.identities[1]}, state_schema=STATE,
    )  # fmt: skip
    # One INSERT into the run's own log: nothing that grows with the snapshot or the change set.
    assert len(recording.statements) == 1
    assert "SYNC_ANSWERS_R1" in recording.statements[0] and "SYNC_SNAPSHOT" not in recording.statements[0]
    assert scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.SYNC_ANSWERS_R1") == 3  # the batch, 2 named rows
    assert scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.SYNC_CHANGE_LOG") == 0


def test_a_retried_run_merges_its_earlier_answers_before_planning_again(
    seeded: Any, gitlab: SyncDefinition
) -> None:
    plan(seeded, gitlab, "r1")
    bad = next(iter(iter_batches(seeded, gitlab, "r1", state_schema=STATE))).identities[3]
    accepted = send_all(seeded, gitlab, "r1", rejected={bad: "bad"}, stop_after=1)
    assert scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.SYNC_SNAPSHOT") == 0  # stopped before merging
    resumed = plan(seeded, gitlab, "r1")  # the same run again, as a retried flow run plans it
    assert (resumed.new, resumed.rejected_retry, resumed.to_send) == (1_000, 1, 1_001)
    assert scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.SYNC_SNAPSHOT") == len(accepted) - 1
    logged = scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.SYNC_CHANGE_LOG WHERE RUN_ID = 'r1'")
    assert logged == len(accepted)  # each answered row logged once, by the merge
    assert scalar(seeded, f"SELECT COUNT(*) FROM {STATE}.SYNC_ANSWERS_R1") == 0
