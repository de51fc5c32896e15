from pathlib import Path

from typer.testing import CliRunner

from iterable_recipes.cli.main import app
from iterable_recipes.cli.setup import AUTOMATIONS_DIR, load_automations

runner = CliRunner()


def test_without_an_alert_block_only_the_lost_runs_automation_is_kept():
    loaded, skipped = load_automations(AUTOMATIONS_DIR, None)
    assert [a.name for a in loaded] == ["recipes-lost-runs-crashed", "recipes-stuck-pending-crashed"]
    assert loaded[0].trigger.posture == "Proactive"
    assert "recipes-inbox-item-dead" in skipped and "recipes-flow-run-failed" in skipped
    assert "recipes-optouts-unresolved" in skipped and "recipes-sync-invalid-rows" in skipped
    assert "recipes-consent-drift" in skipped


def test_invalid_sync_rows_alert_on_the_flows_event_not_on_a_state():
    import uuid

    loaded, _ = load_automations(AUTOMATIONS_DIR, uuid.uuid4())
    (invalid,) = [a for a in loaded if a.name == "recipes-sync-invalid-rows"]
    # A run "Completed with warnings" emits prefect.flow-run.Completed with warnings, not ...Completed.
    assert invalid.trigger.expect == {"recipes.sync.invalid_rows"}
    assert "{{ event.payload.duplicate_identities }}" in invalid.actions[0].body


def test_setup_is_idempotent_and_wires_the_alert_block(prefect_server, monkeypatch, tmp_path: Path):
    from prefect.blocks.notifications import SlackWebhook
    from prefect.client.orchestration import get_client
    from prefect.events.actions import SendNotification

    block_id = SlackWebhook(url="https://hooks.example.invalid/recipes-test").save(
        "recipes-ops", overwrite=True
    )
    monkeypatch.setenv("RECIPES_ALERT_BLOCK", "slack-webhook/recipes-ops")
    monkeypatch.setenv("RECIPES_WORK_POOL", "recipes-setup-test")
    first = runner.invoke(app, ["setup"])
    second = runner.invoke(app, ["setup"])
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert "work pool recipes-setup-test (process): created" in first.output
    assert "work pool recipes-setup-test (process): exists" in second.output
    assert "automation recipes-inbox-item-dead: created" in first.output
    assert "automation recipes-inbox-item-dead: updated" in second.output
    assert "iterable-credentials" in first.output and "skipped" not in second.output
    with get_client(sync_client=True) as client:
        dead = client.read_automations_by_name("recipes-inbox-item-dead")
        assert len(dead) == 1
        notify = dead[0].actions[0]
        assert isinstance(notify, SendNotification)
        assert str(notify.block_document_id) == str(block_id)
        assert client.read_block_type_by_slug("marketo-credentials").slug == "marketo-credentials"
        assert client.read_work_pool("recipes-setup-test").type == "process"
