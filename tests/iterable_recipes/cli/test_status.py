from typer.testing import CliRunner

from iterable_recipes.cli.main import app
from iterable_recipes.store.inbox import Inbox

runner = CliRunner()


def test_status_reports_runs_backlog_dead_items_and_opt_outs_without_raw_emails(prefect_server, app_database):
    inbox = Inbox(app_database)
    inbox.add("customersdot", "evt-1", "saas_trial_started", {"person": {"email": "ada@example.com"}})
    inbox.add("customersdot", "evt-2", "saas_trial_started", {"person": {"email": "bob@example.com"}})
    dead = inbox.add("marketo", "act-9", "unsubscribe", {"email": "cy@example.com", "leadId": "77"})
    inbox.claim("marketo", owner="test")
    assert inbox.mark_dead(dead.id, "400 for cy@example.com", owner="test")
    inbox.add_audit("poll", 77, ["act-9"], "not_in_iterable", {"detail": "no user dee@example.com"})
    inbox.dispose()

    result = runner.invoke(app, ["status"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    out = result.output
    # Deployments of prefect.yaml, not deployed on this fresh server.
    assert "customersdot-events/customersdot-drain" in out and "not deployed" in out
    backlog = [line.split("│")[1:-1] for line in out.splitlines() if line.startswith("│ customersdot ")]
    assert [cell.strip() for cell in backlog[0]][-1] == "2"  # two pending items form the backlog
    assert "77" in out and "not_in_iterable" in out
    assert "@example.com" not in out
    assert "c***@e***.com" in out  # the dead item's person, masked
