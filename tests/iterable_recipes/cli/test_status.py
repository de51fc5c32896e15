from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from iterable_recipes.cli import local_stack
from iterable_recipes.cli.local_stack import free_port
from iterable_recipes.cli.main import app
from iterable_recipes.cli.serve import build_deployments
from iterable_recipes.store.inbox import Inbox

runner = CliRunner()


def test_status_reports_runs_backlog_dead_items_and_opt_outs_without_raw_emails(prefect_client, app_database):
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


DRAIN = "customersdot-events/customersdot-drain"
LATER = datetime(2100, 1, 2, 3, 4, 5, tzinfo=UTC)  # a next run far ahead, whatever the clock says


def row_of(out: str, name: str) -> list[str]:
    """The cells of the table row that starts with ``name``."""
    line = next(line for line in out.splitlines() if line.startswith(f"│ {name} "))
    return [cell.strip() for cell in line.split("│")[1:-1]]


def test_status_shows_the_last_finished_run_and_the_next_scheduled_one(
    prefect_client, register, app_database
):
    from prefect.states import Completed, Running, Scheduled

    register(build_deployments(schedules_active=False))  # no runs of the scheduler's own
    deployment = prefect_client.read_deployment_by_name(DRAIN)
    finished = prefect_client.create_flow_run_from_deployment(deployment.id, state=Running())
    prefect_client.set_flow_run_state(finished.id, Completed(), force=True)
    prefect_client.create_flow_run_from_deployment(deployment.id, state=Running())  # newer, not finished
    prefect_client.create_flow_run_from_deployment(deployment.id, state=Scheduled(scheduled_time=LATER))

    result = runner.invoke(app, ["status"], env={"COLUMNS": "250"})

    assert result.exit_code == 0, result.output
    _, paused, schedules, last, finished_at, upcoming = row_of(result.output, DRAIN)
    assert (paused, schedules, last) == ("no", "every-15-minutes off", "Completed")
    assert finished_at.endswith(" UTC")
    assert upcoming == "2100-01-02 03:04:05 UTC"


@pytest.fixture
def no_prefect_api_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Neither PREFECT_API_URL nor the test server in Prefect's settings; a folder without .recipes/."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


def test_status_without_prefect_api_url_or_a_local_server_says_what_to_export(
    no_prefect_api_url, app_database, monkeypatch
):
    port = free_port()  # nothing listens there, whatever runs on this machine's 4200
    monkeypatch.setattr(local_stack, "PREFECT_PORT", port)

    result = runner.invoke(app, ["status"], env={"COLUMNS": "200"})

    assert result.exit_code == 1
    assert f"export PREFECT_API_URL=http://127.0.0.1:{port}/api" in result.output
    assert "last opt-outs (0)" in result.output  # the rest still printed


@pytest.mark.parametrize("found_by", ["the URL serve wrote", "the usual port"])
def test_status_finds_the_local_server_of_serve_without_prefect_api_url(
    served_api_url, prefect_client, no_prefect_api_url, app_database, monkeypatch, tmp_path, found_by
):
    if found_by == "the URL serve wrote":
        # What a running `recipes serve` leaves in its Prefect home (a port other than 4200 when taken).
        home = tmp_path / ".recipes" / "prefect"
        home.mkdir(parents=True)
        (home / local_stack.API_URL_FILE).write_text(served_api_url)
        monkeypatch.setattr(local_stack, "PREFECT_PORT", free_port())
    else:
        monkeypatch.setattr(local_stack, "PREFECT_PORT", urlsplit(served_api_url).port)

    result = runner.invoke(app, ["status"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert row_of(result.output, DRAIN)[1] == "not deployed"  # asked the test server
