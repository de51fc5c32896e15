import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dev.warehouse import MODEL_TABLE, mutate, picked_emails, seed_model
from iterable_recipes.settings import load_settings
from iterable_recipes.sync.definitions import SYNCS_DIR
from tests.integration import (
    announced_events,
    assert_no_raw_email,
    fakesnow_warehouse,
    flow_run_artifacts,
    flow_run_id,
    run_logs,
    task_run_names,
)

pytestmark = pytest.mark.usefixtures("prefect_server")
GITLAB = "gitlab_marketing_contacts"
BOSS = "boss@corp.example.org"  # an address held in a profile field, not an identity
SKIPPED_SHOWN = "skipped (not in Iterable; update mode creates nobody)"


@pytest.fixture
def warehouse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """fakesnow in patch mode for this test; the flow's own connections see the same database."""
    # An upsert twin of GitLab's sync, so bulk behaviour is tested without look-ups.
    shipped = yaml.safe_load((SYNCS_DIR / f"{GITLAB}.yaml").read_text())
    (tmp_path / f"{GITLAB}.yaml").write_text(yaml.safe_dump(shipped))
    (tmp_path / "contacts_upsert.yaml").write_text(
        yaml.safe_dump(shipped | {"name": "contacts_upsert", "mode": "upsert"})
    )
    with fakesnow_warehouse(monkeypatch, tmp_path) as conn:
        yield conn


def _emails(conn: Any, limit: int | None = None) -> list[str]:
    cur = conn.cursor()
    cur.execute(
        f"SELECT EMAIL_ADDRESS FROM {MODEL_TABLE} ORDER BY EMAIL_ADDRESS"
        + (f" LIMIT {limit}" if limit else "")
    )
    return [row[0] for row in cur.fetchall()]


def test_upsert_sends_changed_rows_only(iterable_standin, app_database, warehouse):
    from flows.snowflake_sync import snowflake_sync

    seed_model(warehouse, 2_000)
    first = snowflake_sync("contacts_upsert")
    assert first["rows_sent"] == first["to_send"] > 0
    assert snowflake_sync("contacts_upsert")["to_send"] == 0

    changed = picked_emails(warehouse, 0.01, seed=3)
    assert mutate(warehouse, 0.01, seed=3) == len(changed) > 0
    writes_before = dict(iterable_standin.sandbox.stats()["profile_writes"])
    third = snowflake_sync("contacts_upsert")
    assert third["changed"] == len(changed) and third["to_send"] == len(changed)
    writes_after = iterable_standin.sandbox.stats()["profile_writes"]
    sent_again = {email for email, n in writes_after.items() if n > writes_before.get(email, 0)}
    assert sent_again == {e.lower() for e in changed}


def test_update_mode_never_creates_anyone(iterable_standin, app_database, warehouse):
    from flows.snowflake_sync import snowflake_sync

    seed_model(warehouse, 120)
    known = _emails(warehouse)[:80]
    iterable_standin.sandbox.seed_users([{"email": e} for e in known])
    summary = snowflake_sync(GITLAB)
    sandbox = iterable_standin.sandbox
    assert summary["not_in_iterable"] > 0
    assert sandbox.stats()["users"] == len(known)
    assert sandbox.stats()["users_created"].get("users/bulkUpdate", 0) == 0
    updated = sandbox.user(known[0].lower())
    assert "namespace_id" in updated["dataFields"]
    # Unknown people wait for their retry interval; nothing is sent again while unchanged.
    assert snowflake_sync(GITLAB)["rows_sent"] == 0


def test_rejected_rows_are_retried_until_accepted(iterable_standin, app_database, warehouse):
    from flows.snowflake_sync import snowflake_sync

    seed_model(warehouse, 50)
    cur = warehouse.cursor()
    first_three = f"UPDATE {MODEL_TABLE} SET EMAIL_ADDRESS = {{}} WHERE GITLAB_DOTCOM_USER_ID < 3"
    cur.execute(first_three.format("'broken-' || GITLAB_DOTCOM_USER_ID || '@'"))
    first = snowflake_sync("contacts_upsert")
    assert first["rejected"] == 3
    second = snowflake_sync("contacts_upsert")
    assert second["retried"] == 3 and second["rejected"] == 3
    cur.execute(first_three.format("'fixed-' || GITLAB_DOTCOM_USER_ID || '@example.com'"))
    third = snowflake_sync("contacts_upsert")
    assert third["rejected"] == 0 and third["new"] == 3


def test_failed_batch_is_sent_again_and_only_it(iterable_standin, app_database, warehouse):
    from prefect.states import State

    from flows.snowflake_sync import snowflake_sync

    seed_model(warehouse, 2_500)
    # The third bulkUpdate is refused as a whole (a permanent 400): that batch is not accepted.
    iterable_standin.sandbox.set_faults(endpoint="users/bulkUpdate", fail_next=["pass", "pass", 400])
    state: State = snowflake_sync("contacts_upsert", return_state=True)
    assert state.is_failed()
    iterable_standin.sandbox.clear_faults()
    again = snowflake_sync("contacts_upsert")
    assert 0 < again["to_send"] <= 1_000 and again["rows_sent"] == again["to_send"]


def test_dry_run_sends_nothing(iterable_standin, app_database, warehouse):
    from flows.snowflake_sync import snowflake_sync

    seed_model(warehouse, 300)
    summary = snowflake_sync("contacts_upsert", dry_run=True)
    assert summary["to_send"] == 300 and summary["status"] == "dry_run"
    # Only reads: the sampled people and the field types.
    assert set(iterable_standin.sandbox.stats()["requests"]) == {"users/getByEmail", "users/getFields"}
    assert iterable_standin.sandbox.stats()["users"] == 0
    assert snowflake_sync("contacts_upsert")["to_send"] == 300


def _artifact_text(state: Any, key: str) -> str:
    (artifact,) = flow_run_artifacts(state, key)
    return str(artifact.data)


def test_a_dry_run_previews_against_iterable_under_its_own_keys(
    iterable_standin, app_database, warehouse, monkeypatch
):
    from flows.snowflake_sync import snowflake_sync
    from iterable_recipes import masking

    monkeypatch.setenv("RECIPES_MASKING_KEY", "flow-preview-key-0123456789")
    folder = Path(str(load_settings().sync_definitions_dir))
    shipped = yaml.safe_load((folder / f"{GITLAB}.yaml").read_text())
    shipped["fields"]["GLM_CONTENT"]["sensitive"] = True
    (folder / "contacts_preview.yaml").write_text(yaml.safe_dump(shipped | {"name": "contacts_preview"}))
    seed_model(warehouse, 40)
    emails = _emails(warehouse)
    iterable_standin.sandbox.seed_users(
        [
            {
                "email": emails[0],
                "dataFields": {"gitlab_plan_title": "Free", "glm_source": BOSS},
            },
            {
                "email": emails[1],
                "dataFields": {"glm_content": "a-secret-value", "namespace_id": "not a number"},
            },
        ]
    )

    state = snowflake_sync("contacts_preview", dry_run=True, return_state=True)

    assert state.is_completed() and state.result()["to_send"] == 40
    preview = _artifact_text(state, "sync-contacts-preview-dry-run-preview")
    masking.set_tag_key("flow-preview-key-0123456789")
    assert masking.mask_email(emails[0]) in preview  # the masker's form, with its keyed tag
    assert masking.mask_email(BOSS) in preview
    assert "*** (14 chars)" in preview and "a-secret-value" not in preview and "content-" not in preview
    assert "problem: sent as number, but Iterable holds namespace_id as string" in preview
    assert '"change": "changed"' in preview and SKIPPED_SHOWN in preview
    not_sent = _artifact_text(state, "sync-contacts-preview-dry-run-not-sent")
    assert "not in Iterable now: 18 of the 20 sampled" in not_sent
    assert "every row: Iterable holds namespace_id as another type" in not_sent
    estimate = _artifact_text(state, "sync-contacts-preview-dry-run-estimate")
    assert "| users/getByEmail | update mode looks each person up first | 40 |" in estimate
    assert "| users/bulkUpdate | one request per batch | 1 |" in estimate
    counts = _artifact_text(state, "sync-contacts-preview-dry-run-counts")
    assert "to_send" in counts
    assert flow_run_artifacts(state, "sync-contacts-preview-counts") == []  # a real run's key, untouched
    lines = run_logs(flow_run_id(state))
    (said,) = [line for line in lines if line.startswith("Dry run of contacts_preview previewed")]
    assert (
        "of 20 sampled rows" in said and "a real run would send 40 row(s) in 41 request(s), under 1 s" in said
    )
    assert_no_raw_email([preview, not_sent, estimate, counts, *lines], [*emails, BOSS])
    requests = iterable_standin.sandbox.stats()["requests"]
    assert set(requests) == {"users/getByEmail", "users/getFields"}  # nothing written
    assert iterable_standin.sandbox.user(emails[0].lower())["dataFields"]["gitlab_plan_title"] == "Free"


def test_a_dry_run_iterable_does_not_answer_still_previews_unknown_values(
    iterable_standin, app_database, warehouse
):
    from flows.snowflake_sync import snowflake_sync

    seed_model(warehouse, 5)
    iterable_standin.sandbox.set_faults(endpoint="users/getByEmail", outage_seconds=300)

    state = snowflake_sync(GITLAB, dry_run=True, return_state=True)

    assert state.is_completed()
    preview = _artifact_text(state, "sync-gitlab-marketing-contacts-dry-run-preview")
    assert "unknown (Iterable did not answer: users/getByEmail 503" in preview
    assert "(not in Iterable)" not in preview and SKIPPED_SHOWN not in preview
    assert len(flow_run_artifacts(state, "sync-gitlab-marketing-contacts-dry-run-estimate")) == 1


def test_a_dry_run_without_iterable_settings_previews_every_value_unknown(app_database, warehouse):
    from flows.snowflake_sync import snowflake_sync

    seed_model(warehouse, 3)  # no stand-in, no ITERABLE_API_KEY: the warehouse alone, as dry runs were

    state = snowflake_sync("contacts_upsert", dry_run=True, return_state=True)

    assert state.is_completed() and state.result()["to_send"] == 3
    preview = _artifact_text(state, "sync-contacts-upsert-dry-run-preview")
    assert "unknown (Iterable not read: ConfigError: ITERABLE_API_KEY is not set" in preview
    assert '"change": "unknown"' in preview and '"change": "new"' not in preview


def _small_batches(tmp_path_dir: str | None, monkeypatch: pytest.MonkeyPatch, in_flight: int) -> str:
    """An upsert twin with batches of 100 rows, and ``in_flight`` batches at once."""
    assert tmp_path_dir, "the warehouse fixture sets SYNC_DEFINITIONS_DIR"
    folder = Path(tmp_path_dir)
    shipped = yaml.safe_load((SYNCS_DIR / f"{GITLAB}.yaml").read_text())
    (folder / "contacts_small.yaml").write_text(
        yaml.safe_dump(shipped | {"name": "contacts_small", "mode": "upsert", "batch_size": 100})
    )
    monkeypatch.setenv("SYNC_BATCHES_IN_FLIGHT", str(in_flight))
    return "contacts_small"


def _counting(sender: Any, ledger: dict[str, int]) -> Any:
    """Wraps ``sync_batch_sender``: counts sends as they start, so a test can see what is in flight."""
    lock = threading.Lock()

    def make(resources: Any, defn: Any, *rest: Any) -> Any:
        send = sender(resources, defn, *rest)

        def counted(batch_no: int, items: Any) -> Any:
            with lock:
                ledger["submitted"] += 1
                ledger["most_unaccepted"] = max(
                    ledger["most_unaccepted"], ledger["submitted"] - ledger["accepted"]
                )
            return send(batch_no, items)

        return counted

    return make


def test_finished_batches_are_accepted_together_within_the_window(
    iterable_standin, app_database, warehouse, monkeypatch
):
    import time

    import flows.snowflake_sync as flow_module
    import iterable_recipes.sync.delivery as module
    from flows.snowflake_sync import snowflake_sync

    sync = _small_batches(load_settings().sync_definitions_dir, monkeypatch, in_flight=3)
    seed_model(warehouse, 1_500)
    ledger = {"submitted": 0, "accepted": 0, "most_unaccepted": 0}
    groups: list[list[int]] = []
    accept = module.accept_batch

    def slow_accept(conn: Any, defn: Any, run_id: str, batch_no: Any, **kwargs: Any) -> None:
        # A slow warehouse, slower than the 200 ms bulkUpdate pace: batches finish while an accept runs.
        time.sleep(0.5)
        accept(conn, defn, run_id, batch_no, **kwargs)
        groups.append(sorted(batch_no))
        ledger["accepted"] += len(batch_no)

    monkeypatch.setattr(module, "accept_batch", slow_accept)
    monkeypatch.setattr(flow_module, "sync_batch_sender", _counting(flow_module.sync_batch_sender, ledger))
    summary = snowflake_sync(sync)
    assert summary["rows_sent"] == summary["accepted"] == 1_500 and summary["failed_batches"] == 0
    assert sorted(n for g in groups for n in g) == list(range(15))  # each batch accepted exactly once
    assert any(len(g) > 1 for g in groups) and len(groups) < 15
    # Never more than the backlog sent but not accepted.
    assert ledger["most_unaccepted"] <= 3 * module.ACCEPT_BACKLOG_WINDOWS
    assert snowflake_sync(sync)["to_send"] == 0


def test_a_failed_accept_fails_the_run_and_loses_nothing(
    iterable_standin, app_database, warehouse, monkeypatch
):
    from prefect.states import State

    import iterable_recipes.sync.delivery as module
    from flows.snowflake_sync import snowflake_sync

    sync = _small_batches(load_settings().sync_definitions_dir, monkeypatch, in_flight=2)
    seed_model(warehouse, 1_000)
    accept, calls = module.accept_batch, []

    def failing_accept(*args: Any, **kwargs: Any) -> None:
        calls.append(args[3])
        if len(calls) == 2:
            raise RuntimeError("warehouse went away")
        accept(*args, **kwargs)

    monkeypatch.setattr(module, "accept_batch", failing_accept)
    state: State = snowflake_sync(sync, return_state=True)
    assert state.is_failed() and len(calls) == 2  # nothing is accepted after the failure
    monkeypatch.setattr(module, "accept_batch", accept)
    again = snowflake_sync(sync)
    assert again["to_send"] == 1_000 - 100 * len(calls[0]) and again["rows_sent"] == again["to_send"]


def test_a_bad_definition_fails_only_its_own_sync(iterable_standin, app_database, warehouse, tmp_path):
    from flows.snowflake_sync import snowflake_sync

    (tmp_path / "not_yaml.yaml").write_text("name: [unclosed\n")
    (tmp_path / "too_big.yaml").write_text(yaml.safe_dump({"name": "too_big", "batch_size": 5000}))
    seed_model(warehouse, 30)
    assert snowflake_sync("contacts_upsert", dry_run=True)["to_send"] == 30
    state = snowflake_sync("too_big", dry_run=True, return_state=True)
    assert state.is_failed() and "too_big.yaml: batch_size: " in str(state.message)


def _with_invalid_rows(conn: Any) -> None:
    """Two NULL identities, one blank, and a second spelling of user10's address (50 rows in all)."""
    seed_model(conn, 50)
    cur = conn.cursor()
    cur.execute(f"UPDATE {MODEL_TABLE} SET EMAIL_ADDRESS = NULL WHERE USER_ID IN (1, 2)")
    cur.execute(f"UPDATE {MODEL_TABLE} SET EMAIL_ADDRESS = '' WHERE USER_ID = 3")
    cur.execute(f"UPDATE {MODEL_TABLE} SET EMAIL_ADDRESS = 'User10@Example.com' WHERE USER_ID = 11")


def test_invalid_rows_end_the_run_completed_with_warnings(
    iterable_standin, app_database, warehouse, monkeypatch
):
    from prefect.states import State

    from flows.snowflake_sync import snowflake_sync

    _with_invalid_rows(warehouse)
    announced = announced_events(monkeypatch)
    state: State = snowflake_sync("contacts_upsert", return_state=True)

    assert state.is_completed() and state.name == "Completed with warnings"
    assert "5 row(s) of contacts_upsert cannot be sent" in str(state.message)
    assert "sync-contacts-upsert-invalid-rows" in str(state.message)  # the artifact's key, as it is
    summary = state.result()
    assert summary["rows_sent"] == summary["accepted"] == 45 and summary["null_identities"] == 3
    (artifact,) = flow_run_artifacts(state, "sync-contacts-upsert-invalid-rows")
    listed = str(artifact.data)
    assert "@example.com" not in listed.lower() and "user10" not in listed.lower()
    for shown in ("(null)", "(blank)", "u***@e***.com", "null identity", "blank identity", "duplicate"):
        assert shown in listed, shown
    alerts = [e for e in announced if e["event"] == "recipes.sync.invalid_rows"]
    assert [e["payload"] for e in alerts] == [
        {"sync": "contacts_upsert", "null_identities": 3, "duplicate_rows": 2, "duplicate_identities": 1}
    ]
    # Called directly, the flow still returns its summary (Prefect hands back the state's data).
    assert snowflake_sync("contacts_upsert")["to_send"] == 0


def test_a_sync_set_to_fail_on_invalid_rows_sends_nothing(
    iterable_standin, app_database, warehouse, monkeypatch
):
    from prefect.states import State

    from flows.snowflake_sync import snowflake_sync

    folder = Path(str(load_settings().sync_definitions_dir))
    shipped = yaml.safe_load((folder / "contacts_upsert.yaml").read_text())
    (folder / "contacts_strict.yaml").write_text(
        yaml.safe_dump(shipped | {"name": "contacts_strict", "on_invalid_rows": "fail"})
    )
    _with_invalid_rows(warehouse)
    announced = announced_events(monkeypatch)
    state: State = snowflake_sync("contacts_strict", return_state=True)

    assert state.is_failed()
    assert "on_invalid_rows is fail" in str(state.message) and "3 with a NULL or blank" in str(state.message)
    # Only the run's start checks read Iterable (the key, the field types); nothing was written.
    assert set(iterable_standin.sandbox.stats()["requests"]) <= {"channels", "users/getFields"}
    cur = warehouse.cursor()
    cur.execute("SELECT COUNT(*) FROM SYNC_STATE.SYNC_SNAPSHOT WHERE SYNC_NAME = 'contacts_strict'")
    assert cur.fetchone()[0] == 0
    assert len(flow_run_artifacts(state, "sync-contacts-strict-invalid-rows")) == 1
    assert any(e["event"] == "recipes.sync.invalid_rows" for e in announced)


def test_a_dry_run_lists_invalid_rows_without_failing(iterable_standin, app_database, warehouse):
    from prefect.states import State

    from flows.snowflake_sync import snowflake_sync

    _with_invalid_rows(warehouse)
    state: State = snowflake_sync("contacts_upsert", dry_run=True, return_state=True)
    assert state.is_completed() and state.name == "Completed with warnings"
    assert state.result()["to_send"] == 45
    assert "sync-contacts-upsert-dry-run-invalid-rows" in str(state.message)
    assert len(flow_run_artifacts(state, "sync-contacts-upsert-dry-run-invalid-rows")) == 1
    assert flow_run_artifacts(state, "sync-contacts-upsert-invalid-rows") == []  # a real run's key
    assert set(iterable_standin.sandbox.stats()["requests"]) <= {"users/getByEmail", "users/getFields"}
    assert iterable_standin.sandbox.stats()["users"] == 0


def test_a_clean_model_ends_plain_completed(iterable_standin, app_database, warehouse, monkeypatch):
    from prefect.states import State

    from flows.snowflake_sync import snowflake_sync

    seed_model(warehouse, 30)
    announced = announced_events(monkeypatch)
    state: State = snowflake_sync("contacts_upsert", return_state=True)
    assert state.is_completed() and state.name == "Completed"
    assert flow_run_artifacts(state, "sync-contacts-upsert-invalid-rows") == []
    assert not any(e["event"] == "recipes.sync.invalid_rows" for e in announced)


def test_a_sync_run_logs_its_plan_each_batch_and_its_end(iterable_standin, app_database, warehouse):
    from flows.snowflake_sync import snowflake_sync

    seed_model(warehouse, 2_500)
    _break_emails(warehouse, 3)
    emails = _emails(warehouse)

    state = snowflake_sync("contacts_upsert", return_state=True)

    assert state.is_completed()
    lines = run_logs(flow_run_id(state))
    text = "\n".join(lines)
    assert "Sync contacts_upsert: 2,500 row(s) to send in 3 batch(es) (2,500 new, 0 changed" in text, text
    batch_lines = [line for line in lines if line.startswith("Batch ")]
    assert len(batch_lines) == 3, batch_lines
    assert "Batch 3 of 3, 500 rows: Iterable accepted" in text
    assert any(
        "3 rejected (invalid: identifier is not valid ×3), sent again by later runs" in line for line in lines
    )
    assert "Sync contacts_upsert done: 2,500 row(s) sent, 2,497 accepted; 3 rejected" in text, text
    expected = {"bulkUpdate batch 1 of 3, 1000 users", "bulkUpdate batch 3 of 3, 500 users"}
    names = task_run_names(flow_run_id(state), expected)
    assert expected <= set(names), names
    assert_no_raw_email(lines + names, emails)


def test_a_sync_whose_batches_are_refused_fails_naming_the_first_error(
    iterable_standin, app_database, warehouse
):
    from flows.snowflake_sync import snowflake_sync

    seed_model(warehouse, 1_500)
    iterable_standin.sandbox.set_faults(endpoint="users/bulkUpdate", fail_next=[401] * 10)

    state = snowflake_sync("contacts_upsert", return_state=True)

    assert state.is_failed()
    message = state.message or ""
    assert (
        "2 batch(es) of contacts_upsert were not accepted; first: users/bulkUpdate 401 BadApiKey" in message
    )
    assert any(
        "not accepted (users/bulkUpdate 401 BadApiKey" in line for line in run_logs(flow_run_id(state))
    )


def _break_emails(conn: Any, below: int) -> None:
    """Give the rows with a user id below ``below`` an address Iterable rejects ("broken-<id>@")."""
    conn.cursor().execute(
        f"UPDATE {MODEL_TABLE} SET EMAIL_ADDRESS = 'broken-' || GITLAB_DOTCOM_USER_ID || '@' "
        f"WHERE GITLAB_DOTCOM_USER_ID < {int(below)}"
    )


def _change_log(conn: Any, sync: str) -> list[tuple[str, str, str, str, str]]:
    cur = conn.cursor()
    cur.execute(
        "SELECT RUN_ID, IDENTITY_HASH, OPERATION, STATUS, COALESCE(ERROR, '') "
        "FROM SYNC_STATE.SYNC_CHANGE_LOG WHERE SYNC_NAME = %s ORDER BY LOGGED_AT",
        (sync,),
    )
    return cur.fetchall()


def test_each_row_sent_is_in_the_change_log_and_the_rejected_ones_in_the_runs_table(
    iterable_standin, app_database, warehouse
):
    from flows.snowflake_sync import snowflake_sync
    from iterable_recipes.sync.change_log import identity_hash
    from iterable_recipes.sync.definitions import IdentityKind

    seed_model(warehouse, 50)
    _break_emails(warehouse, 3)
    broken = [e for e in _emails(warehouse) if e.startswith("broken-")]
    accepted = next(e for e in _emails(warehouse) if not e.startswith("broken-"))

    state = snowflake_sync("contacts_upsert", return_state=True)

    log = _change_log(warehouse, "contacts_upsert")
    assert len(log) == 50 and {row[0] for row in log} == {log[0][0]}, "one row per row sent, one run"
    by_hash = {row[1]: row for row in log}
    assert by_hash[identity_hash(accepted, IdentityKind.EMAIL)][2:4] == ("new", "accepted")
    for email in broken:
        row = by_hash[identity_hash(email, IdentityKind.EMAIL)]
        assert row[3] == "rejected" and "invalid" in row[4].lower(), row
    (artifact,) = flow_run_artifacts(state, "sync-contacts-upsert-not-sent")
    rows = json.loads(artifact.data)
    assert sorted(r["reference"][4:16] for r in rows) == sorted(
        identity_hash(e, IdentityKind.EMAIL)[:12] for e in broken
    )
    assert {r["status"] for r in rows} == {"rejected"} and rows[0]["next"] == "sent again by the next run"
    assert_no_raw_email([str(rows)], broken)

    snowflake_sync("contacts_upsert")
    retried = [row for row in _change_log(warehouse, "contacts_upsert") if row[0] != log[0][0]]
    assert {(row[2], row[3]) for row in retried} == {("rejected_retry", "rejected")} and len(retried) == 3


def test_a_failed_batch_is_logged_failed_and_its_table_is_capped(iterable_standin, app_database, warehouse):
    from flows.snowflake_sync import snowflake_sync

    seed_model(warehouse, 2_500)
    iterable_standin.sandbox.set_faults(endpoint="users/bulkUpdate", fail_next=["pass", "pass", 400])

    state = snowflake_sync("contacts_upsert", return_state=True)

    assert state.is_failed()
    statuses = [row[3] for row in _change_log(warehouse, "contacts_upsert")]
    failed = statuses.count("failed")  # one whole batch: which one depends on the order of the answers
    assert failed in (500, 1_000) and statuses.count("accepted") == 2_500 - failed
    (artifact,) = flow_run_artifacts(state, "sync-contacts-upsert-not-sent")
    rows = json.loads(artifact.data)
    assert len(rows) == 101 and rows[-1]["identity"] == f"and {failed - 100} more not shown", rows[-1]
    assert "400" in rows[0]["error"] and rows[0]["next"].startswith("sent again by the next run")


def test_the_change_log_keeps_sync_change_log_days(iterable_standin, app_database, warehouse, monkeypatch):
    from datetime import timedelta

    from flows.snowflake_sync import snowflake_sync
    from iterable_recipes.sync.change_log import expire
    from iterable_recipes.sync.sql import utc_now

    seed_model(warehouse, 20)
    snowflake_sync("contacts_upsert")
    assert expire(warehouse, "contacts_upsert", 14, "SYNC_STATE", utc_now() + timedelta(days=13)) == 0
    assert expire(warehouse, "contacts_upsert", 14, "SYNC_STATE", utc_now() + timedelta(days=15)) == 20

    monkeypatch.setenv("SYNC_CHANGE_LOG_DAYS", "0")
    mutate(warehouse, 0.5, seed=1)
    assert snowflake_sync("contacts_upsert")["rows_sent"] > 0
    assert _change_log(warehouse, "contacts_upsert") == []  # kept only while the run lasted


def test_recipes_sync_log_follows_one_person_through_the_runs(iterable_standin, app_database, warehouse):
    from typer.testing import CliRunner

    from flows.snowflake_sync import snowflake_sync
    from iterable_recipes.cli.main import app

    seed_model(warehouse, 10)
    person = _emails(warehouse)[0]
    snowflake_sync("contacts_upsert")
    cur = warehouse.cursor()
    cur.execute(f"UPDATE {MODEL_TABLE} SET GLM_CONTENT = 'changed-now' WHERE EMAIL_ADDRESS = %s", (person,))
    snowflake_sync("contacts_upsert")

    shown = CliRunner().invoke(app, ["sync", "log", "contacts_upsert", "--identity", person.upper()])

    assert shown.exit_code == 0, shown.output
    assert shown.output.count("accepted") == 2 and "changed" in shown.output and "new" in shown.output
    assert person.lower() not in shown.output.lower()
    nobody = CliRunner().invoke(app, ["sync", "log", "contacts_upsert", "--identity", "no.one@example.com"])
    assert nobody.exit_code == 1 and "No change-log rows" in nobody.output


def test_a_full_resync_stopped_half_way_then_retried_sends_every_row_once(
    iterable_standin, app_database, warehouse
):
    from flows.snowflake_sync import snowflake_sync

    seed_model(warehouse, 2_500)
    assert snowflake_sync("contacts_upsert")["rows_sent"] == 2_500
    sandbox = iterable_standin.sandbox
    before = dict(sandbox.stats()["profile_writes"])
    assert snowflake_sync("contacts_upsert")["to_send"] == 0  # nothing changed: a plain run sends nothing

    # The resync is stopped half-way: one batch of three is refused as a whole.
    sandbox.set_faults(endpoint="users/bulkUpdate", fail_next=["pass", "pass", 400])
    stopped = snowflake_sync("contacts_upsert", full_resync=True, return_state=True)
    assert stopped.is_failed()
    sandbox.clear_faults()
    retried = snowflake_sync("contacts_upsert", full_resync=True)
    assert 0 < retried["to_send"] <= 1_000 and retried["resent"] == retried["to_send"]

    writes = sandbox.stats()["profile_writes"]
    again = {email: writes[email] - before.get(email, 0) for email in writes}
    assert len(again) == 2_500 and set(again.values()) == {1}, "every row once in the resync, none twice"
    # The epoch is over: a plain run sends nothing, a new resync everything.
    assert snowflake_sync("contacts_upsert")["to_send"] == 0
    assert snowflake_sync("contacts_upsert", full_resync=True)["resent"] == 2_500


def test_recipes_sync_list_shows_each_sync_with_its_last_run(iterable_standin, app_database, warehouse):
    from typer.testing import CliRunner

    from flows.snowflake_sync import snowflake_sync
    from iterable_recipes.cli.main import app

    seed_model(warehouse, 30)
    _break_emails(warehouse, 2)
    snowflake_sync("contacts_upsert")

    shown = CliRunner().invoke(app, ["sync", "list"])

    assert shown.exit_code == 0, shown.output
    line = next(line for line in shown.output.splitlines() if "contacts_upsert" in line)
    assert "succeeded" in line and "28" in line and line.count(" 2 ") >= 2, line
    never = next(line for line in shown.output.splitlines() if GITLAB in line)
    assert "never" in never


def test_clear_fields_clears_only_the_owned_fields_of_people_who_left_the_model(
    iterable_standin, app_database, warehouse, tmp_path
):
    from flows.snowflake_sync import snowflake_sync

    shipped = yaml.safe_load((tmp_path / f"{GITLAB}.yaml").read_text())
    clearing = shipped | {"name": "contacts_clearing", "mode": "upsert", "on_row_removed": "clear_fields"}
    (tmp_path / "contacts_clearing.yaml").write_text(yaml.safe_dump(clearing))
    owned = sorted(mapping["field"] for mapping in shipped["fields"].values())
    seed_model(warehouse, 5)
    people = _emails(warehouse)
    assert snowflake_sync("contacts_clearing")["accepted"] == 5
    sandbox = iterable_standin.sandbox
    sandbox.flush()
    sandbox.seed_users([{"email": people[0].lower(), "dataFields": {"favouriteColour": "teal"}}])

    cur = warehouse.cursor()
    cur.execute(f"DELETE FROM {MODEL_TABLE} WHERE EMAIL_ADDRESS IN (%s, %s)", (people[0], people[1]))
    second = snowflake_sync("contacts_clearing")
    assert (second["leaving"], second["to_send"], second["removed"]) == (2, 2, 2)
    sandbox.flush()

    left = sandbox.user(people[0].lower())
    assert left is not None, "clearing never deletes a person"
    assert all(left["dataFields"].get(name) is None for name in owned), left["dataFields"]
    assert left["dataFields"]["favouriteColour"] == "teal", "a field the sync does not own is untouched"
    stayed = sandbox.user(people[2].lower())
    assert any(stayed["dataFields"].get(name) is not None for name in owned)
    assert snowflake_sync("contacts_clearing")["to_send"] == 0, "cleared people left the snapshot"
    # A full resync never clears: people leaving now are cleared by the next plain run.
    cur.execute(f"DELETE FROM {MODEL_TABLE} WHERE EMAIL_ADDRESS = %s", (people[2],))
    assert snowflake_sync("contacts_clearing", full_resync=True)["leaving"] == 0
    assert snowflake_sync("contacts_clearing")["leaving"] == 1


@pytest.mark.parametrize(
    ("project_type", "identity"),
    [
        ("email", "email"),
        ("email", "userId"),
        ("userId", "userId"),
        ("hybrid", "email"),
        ("hybrid", "userId"),
    ],
)
def test_update_only_creates_nobody_in_each_project_type(
    iterable_standin, app_database, warehouse, tmp_path, monkeypatch, project_type, identity
):
    """preferUserId false holds only in email-based projects: elsewhere an update by userId is checked
    (byUserId) before it is sent, as an update by email always is."""
    from flows.snowflake_sync import snowflake_sync

    shipped = yaml.safe_load((tmp_path / f"{GITLAB}.yaml").read_text())
    column = "EMAIL_ADDRESS" if identity == "email" else "GITLAB_DOTCOM_USER_ID"
    definition = shipped | {"name": "contacts_update", "identity": {"column": column, "kind": identity}}
    (tmp_path / "contacts_update.yaml").write_text(yaml.safe_dump(definition))
    monkeypatch.setenv("ITERABLE_PROJECT_TYPE", project_type)
    sandbox = iterable_standin.sandbox
    sandbox.set_options(project_type=project_type)
    seed_model(warehouse, 12)
    cur = warehouse.cursor()
    cur.execute(f"SELECT EMAIL_ADDRESS, GITLAB_DOTCOM_USER_ID FROM {MODEL_TABLE} ORDER BY 2 LIMIT 8")
    known = cur.fetchall()
    sandbox.seed_users([{"email": email.lower(), "userId": str(user_id)} for email, user_id in known])

    summary = snowflake_sync("contacts_update")

    assert (summary["accepted"], summary["not_in_iterable"]) == (8, 4), summary
    assert sandbox.stats()["users"] == 8 and sandbox.stats()["users_created"].get("users/bulkUpdate", 0) == 0
    lookup = "users/byUserId" if identity == "userId" else "users/getByEmail"
    lookups = sandbox.stats()["requests"].get(lookup)
    assert bool(lookups) is (identity == "email" or project_type != "email"), sandbox.stats()["requests"]
