"""`recipes consent status` against a real, migrated SQLite app database."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from typer.testing import CliRunner

from iterable_recipes.cli.consent import age
from iterable_recipes.cli.main import app
from iterable_recipes.optouts.keys import webhook_item
from iterable_recipes.store.inbox import Inbox
from iterable_recipes.store.schema import suppressions

runner = CliRunner()


def _value(output: str, name: str) -> str:
    """The value printed on the line of ``name``."""
    match = re.search(rf"^{name}\s{{2,}}(.+?)(?:\s{{2,}}|$)", output, re.MULTILINE)
    assert match, output
    return match.group(1)


def test_status_prints_the_ledgers_counts_and_the_oldest_pending_age(app_database: str) -> None:
    inbox = Inbox(app_database)
    at = "2026-11-20T10:00:00+00:00"
    inbox.add_many([webhook_item(str(lead), f"person{lead}@example.com", at) for lead in range(1, 6)])
    inbox.ledger.mark_applied(["person1@example.com", "person2@example.com"])
    inbox.ledger.check_later(["person3@example.com"])  # Iterable did not know them yet
    inbox.ledger.lift("5")
    inbox.add_audit("poll", "9", ["guid-9"], "unresolved", {"reason": "the lead has no email address"})
    with inbox.engine.begin() as conn:
        conn.execute(update(suppressions).values(recorded_at=datetime.now(UTC) - timedelta(days=2, hours=3)))

    result = runner.invoke(app, ["consent", "status"])
    assert result.exit_code == 0, result.output
    assert _value(result.output, "active") == "4"
    assert _value(result.output, "pending") == "2"
    assert _value(result.output, "pending existence") == "1"
    assert _value(result.output, "applied") == "2"
    assert _value(result.output, "lifted") == "1"
    assert _value(result.output, "unresolved") == "1"
    assert _value(result.output, "oldest pending") == "2 d 3 h"
    assert "@" not in result.output


def test_status_of_an_empty_ledger_says_nothing_is_pending(app_database: str) -> None:
    result = runner.invoke(app, ["consent", "status"])
    assert result.exit_code == 0, result.output
    assert _value(result.output, "active") == "0"
    assert _value(result.output, "oldest pending") == "-"


def test_age_reads_to_the_minute() -> None:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    assert age(now - timedelta(minutes=12, seconds=30), now) == "12 min"
    assert age(now - timedelta(hours=2, minutes=5), now) == "2 h 5 min"
    assert age(None, now) == "-"
