"""`recipes inbox` against a real, migrated SQLite app database: list, retry, replay, purge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from iterable_recipes.cli.main import app
from iterable_recipes.store.inbox import Inbox, NewItem
from iterable_recipes.store.schema import received_events
from tests.integration import customersdot_event

runner = CliRunner()


def _add(inbox: Inbox, count: int) -> list[tuple[int, str]]:
    """Store ``count`` CustomersDot events; returns (item id, the person's raw email)."""
    bodies = [customersdot_event() for _ in range(count)]
    results = inbox.add_many(
        [NewItem("customersdot", b["id"], b["type"], b) for b in bodies],
    )
    return [(r.id, b["person"]["email"]) for r, b in zip(results, bodies, strict=True)]


def _deliver(inbox: Inbox, ids: list[int]) -> None:
    claimed = inbox.claim("customersdot", limit=len(ids), owner="test")
    assert sorted(i.id for i in claimed) == sorted(ids)
    assert inbox.mark_delivered(ids, owner="test") == len(ids)


def _invoke(*args: str) -> str:
    result = runner.invoke(app, ["inbox", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_list_masks_emails_and_filters(app_database: str) -> None:
    inbox = Inbox(app_database)
    (dead_id, dead_email), (pending_id, pending_email) = _add(inbox, 2)
    inbox.claim("customersdot", limit=1, owner="test")
    assert inbox.mark_dead(dead_id, f"invalid_data: {dead_email} has a field of another type", owner="test")

    everything = _invoke("list")
    assert str(dead_id) in everything and str(pending_id) in everything
    assert dead_email not in everything and pending_email not in everything
    assert f"{dead_email[0]}***@e***.com" in everything  # masked person and masked error
    assert "invalid_data" in everything

    dead_only = _invoke("list", "--status", "dead", "--source", "customersdot")
    assert "dead" in dead_only and "pending" not in dead_only

    assert "no items" in _invoke("list", "--source", "marketo")
    refused = runner.invoke(app, ["inbox", "list", "--status", "lost"])
    assert refused.exit_code != 0


def test_retry_one_and_all_dead(app_database: str) -> None:
    inbox = Inbox(app_database)
    ids = [item_id for item_id, _ in _add(inbox, 3)]
    inbox.claim("customersdot", limit=3, owner="test")
    for item_id in ids:
        assert inbox.mark_dead(item_id, "rejected", owner="test")

    assert f"item {ids[0]} pending again" in _invoke("retry", str(ids[0]))
    again = inbox.get(ids[0])
    assert again is not None and again.status == "pending" and again.attempts == 0

    # A pending item cannot be retried: exit 1 saying why.
    refused = runner.invoke(app, ["inbox", "retry", str(ids[0])])
    assert refused.exit_code == 1 and "pending" in refused.output
    assert runner.invoke(app, ["inbox", "retry", "999999"]).exit_code == 1
    # Neither an id nor --dead, or both: a usage error.
    assert runner.invoke(app, ["inbox", "retry"]).exit_code == 2

    assert "0 dead item(s)" in _invoke("retry", "--dead", "--source", "marketo")
    assert "2 dead item(s)" in _invoke("retry", "--dead", "--source", "customersdot")
    assert inbox.counts()["customersdot"] == {"pending": 3}


def test_replay_since_keeps_ids(app_database: str) -> None:
    inbox = Inbox(app_database)
    ids = [item_id for item_id, _ in _add(inbox, 3)]
    _deliver(inbox, ids)
    # The oldest delivery happened two days ago: outside the replay window below.
    with inbox.engine.begin() as conn:
        conn.execute(
            update(received_events)
            .where(received_events.c.id == ids[0])
            .values(delivered_at=datetime.now(UTC) - timedelta(days=2))
        )
    since = (datetime.now(UTC) - timedelta(days=1)).replace(tzinfo=None).isoformat()

    output = _invoke("replay", "--since", since, "--source", "customersdot")
    assert "2 item(s) will be sent again" in output
    assert inbox.counts()["customersdot"] == {"delivered": 1, "pending": 2}
    for item_id in ids[1:]:
        item = inbox.get(item_id)
        # The same row with its source id and payload: the drain derives the same Iterable event id.
        assert item is not None and item.status == "pending" and item.payload is not None
        assert item.source_id == item.payload["id"]

    bad = runner.invoke(app, ["inbox", "replay", "--since", "yesterday"])
    assert bad.exit_code == 2 and "ISO 8601" in bad.output


def test_purge_drops_old_payloads_only(app_database: str) -> None:
    inbox = Inbox(app_database)
    ids = [item_id for item_id, _ in _add(inbox, 3)]
    _deliver(inbox, ids[:2])
    with inbox.engine.begin() as conn:
        conn.execute(
            update(received_events)
            .where(received_events.c.id == ids[0])
            .values(updated_at=datetime.now(UTC) - timedelta(days=40))
        )

    assert "1 payload(s) purged" in _invoke("purge")  # default retention: 30 days
    purged, kept, waiting = (inbox.get(i) for i in ids)
    assert purged is not None and purged.payload is None
    assert kept is not None and kept.payload is not None
    assert waiting is not None and waiting.payload is not None
    assert "(purged)" in _invoke("list")
    assert "1 payload(s) purged" in _invoke("purge", "--older-than-days", "0")


def test_fresh_database_is_migrated(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'recipes.db'}"
    monkeypatch.setenv("RECIPES_DATABASE_URL", url)
    assert "no items" in _invoke("list")
    assert (tmp_path / "new" / "recipes.db").exists()
    assert Inbox(url).counts() == {}


MASKING_KEY = "a-masking-key-for-tests-only-0123456789"


def _rows(output: str) -> set[str]:
    """The item ids of the rows of a printed items table."""
    cells = [line.split("│")[1].strip() for line in output.splitlines() if line.count("│") > 2]
    return {cell for cell in cells if cell.isdigit()}


def test_find_lists_one_persons_items_by_address_and_tags_them(
    app_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from iterable_recipes.masking import email_tag, set_tag_key
    from iterable_recipes.optouts.keys import webhook_item

    monkeypatch.setenv("RECIPES_MASKING_KEY", MASKING_KEY)
    inbox = Inbox(app_database)
    dana = customersdot_event()
    dana["person"]["email"] = " Dana@Example.com"  # as typed: padded, mixed case
    others = [customersdot_event() for _ in range(2)]
    for body in others:
        body["person"]["email"] = f"d{body['id'][-4:]}@example.com"  # the same masked shape as Dana's
    results = inbox.add_many([NewItem("customersdot", b["id"], b["type"], b) for b in [dana, *others]])
    optout = inbox.add_many([webhook_item("42", "dana@example.com", "2026-11-20T10:00:00Z")])
    mine = {str(results[0].id), str(optout[0].id)}

    output = _invoke("find", "--email", "DANA@example.com ")
    set_tag_key(MASKING_KEY)
    tag = email_tag("dana@example.com")
    assert tag is not None and f"d***@e***.com #{tag}" in output
    assert _rows(output) == mine
    assert "dana@" not in output.lower() and MASKING_KEY not in output

    # The list tells people apart: every item carries its person's own tag.
    everything = _invoke("list")
    assert everything.count(f"#{tag}") == 2
    assert len({email_tag(b["person"]["email"]) for b in others} | {tag}) == 3
    assert all(f"#{email_tag(b['person']['email'])}" in everything for b in others)

    assert "no items" in _invoke("find", "--email", "nobody@example.com")
    assert _rows(_invoke("find", "--email", "dana@example.com", "--limit", "1")) == {str(optout[0].id)}
