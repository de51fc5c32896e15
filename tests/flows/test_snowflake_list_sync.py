"""List membership syncs end to end: fakesnow, the Iterable stand-in over a real socket, a Prefect server.

Members entering the model join the static list, members leaving it leave; nobody is created, a member
Iterable refused is tried again, and a person under a Marketo suppression never joins a marketing list.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakesnow
import pytest
import yaml

from iterable_recipes.optouts.keys import webhook_item
from iterable_recipes.store.inbox import Inbox
from iterable_recipes.sync import connect
from tests.integration import assert_no_raw_email, flow_run_id, run_logs, use_fakesnow

pytestmark = pytest.mark.usefixtures("prefect_server")
MEMBERS = "ANALYTICS.PUBLIC.LIST_MEMBERS"
PEOPLE = [f"member-{n}@example.com" for n in range(6)]


def _definition(name: str, list_id: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"sql": f"SELECT EMAIL_ADDRESS FROM {MEMBERS} WHERE IN_LIST"},
        "identity": {"column": "EMAIL_ADDRESS", "kind": "email"},
        "kind": "list_membership",
        "list_id": list_id,
        **extra,
    }


@pytest.fixture
def members(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, iterable_standin: Any) -> Iterator[Any]:
    """A member model in fakesnow (EMAIL_ADDRESS, IN_LIST), the list syncs' folder, two static lists."""
    use_fakesnow(monkeypatch)
    sandbox = iterable_standin.sandbox
    marketing = sandbox.create_list("Trial onboarding")
    plain = sandbox.create_list("Product research panel")
    (tmp_path / "trial_list.yaml").write_text(yaml.safe_dump(_definition("trial_list", marketing)))
    (tmp_path / "panel_list.yaml").write_text(
        yaml.safe_dump(_definition("panel_list", plain, marketing=False))
    )
    monkeypatch.setenv("SYNC_DEFINITIONS_DIR", str(tmp_path))
    with fakesnow.patch():
        conn = connect(account="fake", user="fake", password="fake", database="ANALYTICS", schema="PUBLIC")
        cur = conn.cursor()
        cur.execute("CREATE SCHEMA IF NOT EXISTS ANALYTICS.PUBLIC")
        cur.execute(f"CREATE OR REPLACE TABLE {MEMBERS} (EMAIL_ADDRESS VARCHAR, IN_LIST BOOLEAN)")
        try:
            yield conn, {"trial_list": marketing, "panel_list": plain}
        finally:
            conn.close()


def _model(conn: Any, emails: list[str]) -> None:
    """The model holds exactly ``emails`` as members (every other person of PEOPLE is out)."""
    cur = conn.cursor()
    cur.execute(f"DELETE FROM {MEMBERS}")
    cur.execute(
        f"INSERT INTO {MEMBERS} VALUES " + ", ".join("(%s, %s)" for _ in PEOPLE),
        [v for person in PEOPLE for v in (person, person in emails)],
    )


def test_members_enter_and_leave_over_three_runs(iterable_standin, app_database, members):
    from flows.snowflake_sync import snowflake_sync

    conn, lists = members
    sandbox, transport = iterable_standin.sandbox, iterable_standin.transport
    sandbox.seed_users([{"email": p, "unsubscribedChannelIds": [3]} for p in PEOPLE])
    reader = _reader(iterable_standin)

    _model(conn, PEOPLE[:3])
    first = snowflake_sync("trial_list")
    assert (first["new"], first["accepted"], first["leaving"]) == (3, 3, 0)
    assert reader.get_list_users(lists["trial_list"]) == PEOPLE[:3]

    _model(conn, PEOPLE[1:5])  # 0 leaves, 3 and 4 enter, 1 and 2 stay
    second = snowflake_sync("trial_list")
    assert (second["new"], second["leaving"], second["removed"], second["unchanged"]) == (2, 1, 1, 2)
    assert reader.get_list_users(lists["trial_list"]) == PEOPLE[1:5]

    _model(conn, [PEOPLE[4]])  # everyone but 4 leaves
    third = snowflake_sync("trial_list", return_state=True)
    summary = third.result()
    assert (summary["new"], summary["leaving"], summary["removed"]) == (0, 3, 3)
    assert reader.get_list_users(lists["trial_list"]) == [PEOPLE[4]]
    # The removals went out with channelUnsubscribe false, and joining touched nobody's channels.
    removals = [body for _, path, body in transport.sent if path == "/api/lists/unsubscribe"]
    assert removals and all(body["channelUnsubscribe"] is False for body in removals)
    assert all(sandbox.user(p)["unsubscribedChannelIds"] == [3] for p in PEOPLE)
    assert all(sandbox.user(p)["subscribedMessageTypeIds"] == [] for p in PEOPLE)
    # A fourth run has nothing to do: the removed members left the snapshot.
    assert snowflake_sync("trial_list")["to_send"] == 0
    logs = run_logs(flow_run_id(third))
    assert any("3 leaving the list" in line for line in logs)
    assert any(line.startswith("Sync trial_list done:") and "3 removed" in line for line in logs)
    assert_no_raw_email(logs, PEOPLE)


def test_unknown_people_are_not_created_and_are_looked_at_again(iterable_standin, app_database, members):
    from flows.snowflake_sync import snowflake_sync

    conn, lists = members
    sandbox = iterable_standin.sandbox
    sandbox.seed_users([{"email": p} for p in PEOPLE[:2]])
    _model(conn, PEOPLE[:4])  # 2 and 3 are not in Iterable
    first = snowflake_sync("trial_list")
    assert (first["accepted"], first["not_in_iterable"]) == (2, 2)
    assert sandbox.stats()["users"] == 2
    assert sandbox.stats()["users_created"].get("lists/subscribe", 0) == 0
    assert sandbox.list_members(lists["trial_list"]) == PEOPLE[:2]
    # Kept, not forgotten: once the person exists and their retry interval is over, they join.
    sandbox.seed_users([{"email": PEOPLE[2]}])
    cur = conn.cursor()
    cur.execute("UPDATE SYNC_STATE.SYNC_NOT_IN_ITERABLE SET SEEN_AT = DATEADD(DAY, -2, SEEN_AT)")
    second = snowflake_sync("trial_list")
    assert (second["retried"], second["accepted"], second["not_in_iterable"]) == (2, 1, 1)
    assert sandbox.list_members(lists["trial_list"]) == PEOPLE[:3]
    assert sandbox.stats()["users_created"].get("lists/subscribe", 0) == 0


def test_a_rejected_member_is_sent_again_by_the_next_run(iterable_standin, app_database, members):
    from flows.snowflake_sync import snowflake_sync

    conn, lists = members
    sandbox = iterable_standin.sandbox
    sandbox.seed_users([{"email": p} for p in PEOPLE[:3]])
    _model(conn, PEOPLE[:3])
    # Iterable answers 200 but names the first member as forgotten: a per-member rejection.
    forgotten = {"successCount": 0, "failCount": 3, "failedUpdates": {"forgottenEmails": PEOPLE[:3]}}
    sandbox.set_faults(endpoint="lists/subscribe", fail_next=[{"status": 200, "body": forgotten}])
    first = snowflake_sync("trial_list")
    assert (first["accepted"], first["rejected"]) == (0, 3)
    assert sandbox.list_members(lists["trial_list"]) == []
    second = snowflake_sync("trial_list")
    assert (second["retried"], second["accepted"], second["rejected"]) == (3, 3, 0)
    assert sandbox.list_members(lists["trial_list"]) == PEOPLE[:3]


def test_a_suppressed_person_never_joins_a_marketing_list(iterable_standin, app_database, members):
    from flows.snowflake_sync import snowflake_sync

    conn, lists = members
    sandbox = iterable_standin.sandbox
    sandbox.seed_users([{"email": p} for p in PEOPLE[:3]])
    inbox = Inbox(app_database)
    inbox.add_many([webhook_item("4242", f"  {PEOPLE[1].upper()} ", "2026-11-20T10:00:00+00:00")])
    _model(conn, PEOPLE[:3])

    marketing = snowflake_sync("trial_list")
    assert (marketing["accepted"], marketing["held_back"], marketing["rejected"]) == (2, 1, 0)
    assert sandbox.list_members(lists["trial_list"]) == [PEOPLE[0], PEOPLE[2]]
    sent = [s["email"] for _, p, b in iterable_standin.transport.sent if p == "/api/lists/subscribe"
            for s in b["subscribers"]]  # fmt: skip
    assert PEOPLE[1] not in sent
    # Held back, not forgotten: still held while suppressed, never a rejection to alert on.
    again = snowflake_sync("trial_list")
    assert (again["retried"], again["held_back"], again["accepted"]) == (1, 1, 0)
    assert sandbox.list_members(lists["trial_list"]) == [PEOPLE[0], PEOPLE[2]]
    # Subscribed again in Marketo: the suppression is lifted, and the next run adds them.
    assert inbox.ledger.lift("4242") == 1
    lifted = snowflake_sync("trial_list")
    assert (lifted["retried"], lifted["held_back"], lifted["accepted"]) == (1, 0, 1)
    assert sandbox.list_members(lists["trial_list"]) == PEOPLE[:3]

    panel = snowflake_sync("panel_list")  # marketing: false
    assert (panel["accepted"], panel["held_back"]) == (3, 0)
    assert sandbox.list_members(lists["panel_list"]) == PEOPLE[:3]


def test_the_flow_refuses_a_list_the_project_does_not_have(iterable_standin, app_database, members, tmp_path):
    from prefect.states import State

    from flows.snowflake_sync import snowflake_sync

    conn, _ = members
    (tmp_path / "gone_list.yaml").write_text(yaml.safe_dump(_definition("gone_list", 987_654)))
    _model(conn, PEOPLE[:2])
    state: State = snowflake_sync("gone_list", return_state=True)
    assert state.is_failed()
    assert "list_id: list 987654 is not in the Iterable project" in str(state.message)
    assert iterable_standin.sandbox.stats()["requests"].get("lists/subscribe") is None


def _reader(standin: Any) -> Any:
    """A client of the test's own for reading the list back through GET lists/getUsers."""
    from iterable_recipes.clients.iterable import IterableClient

    return IterableClient("sandbox-key", base_url=standin.url, transport=standin.transport, timeout=5)


def test_a_marketing_list_is_not_sent_without_the_consent_ledger(iterable_standin, members):
    from iterable_recipes.sync.definitions import SyncDefinition
    from iterable_recipes.sync.delivery import deliver_batch

    _, lists = members
    defn = SyncDefinition.model_validate(_definition("trial_list", lists["trial_list"]))
    client = _reader(iterable_standin)
    items = [{"action": "subscribe", "member": {"email": PEOPLE[0]}}]
    with pytest.raises(ValueError, match="needs the consent ledger"):
        deliver_batch(client, defn, 0, items)
    assert iterable_standin.sandbox.stats()["requests"].get("lists/subscribe") is None
