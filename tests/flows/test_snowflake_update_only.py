"""Update-only by email at bulk speed: who is checked before sending, how, and that nobody is created."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dev.warehouse import MODEL_TABLE, mutate, seed_model
from iterable_recipes.sync.definitions import SYNCS_DIR
from tests.integration import fakesnow_warehouse

pytestmark = pytest.mark.usefixtures("prefect_server")
GITLAB = "gitlab_marketing_contacts"  # the shipped definition: mode update, keyed by email
STATE = "SYNC_STATE"
BELOW, ABOVE = "5000", "0"  # SYNC_EXPORT_THRESHOLD: getByEmail, or the user export for everyone


@pytest.fixture
def warehouse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """fakesnow in patch mode; the flow's own connections see the same database."""
    shipped = yaml.safe_load((SYNCS_DIR / f"{GITLAB}.yaml").read_text())
    assert shipped["mode"] == "update"
    (tmp_path / f"{GITLAB}.yaml").write_text(yaml.safe_dump(shipped))
    with fakesnow_warehouse(monkeypatch, tmp_path) as conn:
        yield conn


def _emails(conn: Any) -> list[str]:
    cur = conn.cursor()
    cur.execute(f"SELECT LOWER(EMAIL_ADDRESS) FROM {MODEL_TABLE} ORDER BY EMAIL_ADDRESS")
    return [row[0] for row in cur.fetchall()]


def _requests(sandbox: Any, endpoint: str) -> int:
    return sum(sandbox.stats()["requests"].get(endpoint, {}).values())


def _count(conn: Any, table: str) -> int:
    cur = conn.cursor()
    cur.execute(f"SELECT COUNT(*) FROM {STATE}.{table} WHERE SYNC_NAME = '{GITLAB}'")
    return int(cur.fetchone()[0])


@pytest.mark.parametrize("threshold", [BELOW, ABOVE], ids=["getByEmail", "export"])
def test_unknown_people_are_never_created(iterable_standin, app_database, warehouse, monkeypatch, threshold):
    from flows.snowflake_sync import snowflake_sync

    monkeypatch.setenv("SYNC_EXPORT_THRESHOLD", threshold)
    seed_model(warehouse, 120)
    emails = _emails(warehouse)
    known = emails[:80]
    sandbox = iterable_standin.sandbox
    sandbox.seed_users([{"email": e} for e in known] + [{"email": "someone.else@example.net"}])
    summary = snowflake_sync(GITLAB)
    assert summary["not_in_iterable"] == 40 and summary["accepted"] == 80
    assert summary["rows_sent"] == 80  # the unknown 40 never left the warehouse
    assert sandbox.stats()["users"] == 81
    assert sandbox.stats()["users_created"].get("users/bulkUpdate", 0) == 0
    assert all(sandbox.user(e) is None for e in emails[80:])
    assert "namespace_id" in sandbox.user(known[0])["dataFields"]
    if threshold == ABOVE:
        assert _requests(sandbox, "export/data.json") == 1
        assert _requests(sandbox, "users/getByEmail") == 0
    else:
        assert _requests(sandbox, "export/data.json") == 0
        assert _requests(sandbox, "users/getByEmail") == 120
    # Unknown people wait for their retry interval; the run's not-sent rows say why.
    assert snowflake_sync(GITLAB)["rows_sent"] == 0
    cur = warehouse.cursor()
    cur.execute(f"SELECT STATUS, COUNT(*) FROM {STATE}.SYNC_CHANGE_LOG GROUP BY STATUS")
    assert dict(cur.fetchall()) == {"accepted": 80, "not_in_iterable": 40}


def test_changed_rows_of_accepted_people_are_sent_without_a_look_up(
    iterable_standin, app_database, warehouse, monkeypatch
):
    from flows.snowflake_sync import snowflake_sync

    monkeypatch.setenv("SYNC_EXPORT_THRESHOLD", BELOW)
    seed_model(warehouse, 200)
    sandbox = iterable_standin.sandbox
    sandbox.seed_users([{"email": e} for e in _emails(warehouse)])
    assert snowflake_sync(GITLAB)["accepted"] == 200
    looked_up = _requests(sandbox, "users/getByEmail")
    assert looked_up == 200
    changed = mutate(warehouse, 0.1, seed=5)
    writes = _requests(sandbox, "users/bulkUpdate")
    again = snowflake_sync(GITLAB)
    assert again["changed"] == changed > 0 and again["rows_sent"] == changed
    assert again["existence_checked"] == 0
    assert _requests(sandbox, "users/getByEmail") == looked_up  # not one look-up more
    assert _requests(sandbox, "users/bulkUpdate") > writes


@pytest.mark.parametrize("threshold", [BELOW, ABOVE], ids=["getByEmail", "export"])
def test_a_person_deleted_after_being_accepted_is_not_recreated_once_the_refresh_age_passed(
    iterable_standin, app_database, warehouse, monkeypatch, threshold
):
    from flows.snowflake_sync import snowflake_sync

    monkeypatch.setenv("SYNC_EXPORT_THRESHOLD", threshold)
    monkeypatch.setenv("SYNC_EXISTENCE_REFRESH_DAYS", "7")
    seed_model(warehouse, 60)
    emails = _emails(warehouse)
    sandbox = iterable_standin.sandbox
    sandbox.seed_users([{"email": e} for e in emails])
    assert snowflake_sync(GITLAB)["accepted"] == 60
    assert sandbox.forget_user(emails[0])  # deleted in Iterable after it was accepted
    # Eight days later every row changes; the people were last seen in Iterable eight days ago.
    cur = warehouse.cursor()
    cur.execute(f"UPDATE {STATE}.SYNC_KNOWN_PEOPLE SET SEEN_AT = DATEADD(day, -8, SEEN_AT)")
    assert mutate(warehouse, 1.0, seed=9) == 60
    summary = snowflake_sync(GITLAB)
    assert summary["existence_checked"] == 60
    assert summary["not_in_iterable"] == 1 and summary["rows_sent"] == 59
    assert sandbox.user(emails[0]) is None
    assert sandbox.stats()["users_created"].get("users/bulkUpdate", 0) == 0
    # Seen again now: the next change of the others is sent without a check; only the deleted
    # person's changed row is checked again (and still not sent).
    mutate(warehouse, 1.0, seed=10)
    last = snowflake_sync(GITLAB)
    assert last["existence_checked"] == 1 and last["rows_sent"] == 59 and last["not_in_iterable"] == 1
    assert sandbox.user(emails[0]) is None


@pytest.mark.parametrize(
    "fault",
    [
        {"fail_next": [401] * 4},  # refused: a PermanentError, never retried
        {"fail_next": [{"status": 200, "text": '{"email": "a@example.com"}\nnot json\n'}] * 4},
    ],
    ids=["export-refused", "export-unreadable"],
)
def test_an_export_failure_leaves_rows_for_the_next_run(
    iterable_standin, app_database, warehouse, monkeypatch, fault
):
    from prefect.states import State

    from flows.snowflake_sync import snowflake_sync

    monkeypatch.setenv("SYNC_EXPORT_THRESHOLD", ABOVE)
    seed_model(warehouse, 50)
    emails = _emails(warehouse)
    sandbox = iterable_standin.sandbox
    sandbox.seed_users([{"email": e} for e in emails[:30]])
    sandbox.set_faults(endpoint="export/data.json", **fault)
    state: State = snowflake_sync(GITLAB, return_state=True)
    assert state.is_failed()
    assert "existence check" in (state.message or "")
    assert _requests(sandbox, "users/bulkUpdate") == 0  # nothing unverified was sent
    assert _count(warehouse, "SYNC_SNAPSHOT") == 0
    assert _count(warehouse, "SYNC_NOT_IN_ITERABLE") == 0  # nobody called unknown on a failed read
    sandbox.clear_faults()
    again = snowflake_sync(GITLAB)
    assert again["new"] == 50 and again["accepted"] == 30 and again["not_in_iterable"] == 20
    assert sandbox.stats()["users"] == 30
