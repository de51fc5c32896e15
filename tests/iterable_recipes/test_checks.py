"""`recipes check` and the flows' checks at start, against the stand-ins, fakesnow and real files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakesnow
import pytest
import yaml
from typer.testing import CliRunner

from dev.standins.iterable.app import create_app as create_iterable
from dev.standins.iterable.options import SandboxOptions
from dev.standins.serving import ServerThread
from dev.warehouse import MODEL_TABLE, seed_model
from iterable_recipes.checks import CheckFailed, check_at_start, check_iterable_key, run_checks
from iterable_recipes.cli.main import app
from iterable_recipes.resources import Resources
from iterable_recipes.settings import load_settings
from iterable_recipes.sync import connect
from iterable_recipes.sync.definitions import SYNCS_DIR
from tests.integration import WEBHOOK_SECRET

GITLAB = "gitlab_marketing_contacts"
VARIABLES = (
    "ITERABLE_API_KEY", "ITERABLE_BASE_URL", "ITERABLE_REGION", "ITERABLE_CREDENTIALS_BLOCK",
    "MARKETO_BASE_URL", "MARKETO_CLIENT_ID", "MARKETO_CLIENT_SECRET", "MARKETO_CREDENTIALS_BLOCK",
    "MARKETO_WEBHOOK_SECRET", "CUSTOMERSDOT_WEBHOOK_SECRETS", "SNOWFLAKE_ACCOUNT", "SNOWFLAKE_USER",
    "SNOWFLAKE_PASSWORD", "SNOWFLAKE_PRIVATE_KEY_PATH", "SNOWFLAKE_CREDENTIALS_BLOCK", "SYNC_DEFINITIONS_DIR",
    "CONSENT_POLICY_PATH", "RECIPES_MASKING_KEY",
)  # fmt: skip
MASKING_KEY = "a-masking-key-for-tests-only-0123456789"


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test sets counts: no variable from the outer environment, no .env file."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _failed(findings: list[Any]) -> dict[str, str]:
    return {f.check: f.detail for f in findings if not f.ok}


def test_offline_names_every_missing_setting_of_every_recipe_at_once():
    failed = _failed(run_checks(load_settings(), offline=True))
    assert set(failed) == {
        "ITERABLE_API_KEY", "CUSTOMERSDOT_WEBHOOK_SECRETS", "MARKETO_BASE_URL", "MARKETO_CLIENT_ID",
        "MARKETO_CLIENT_SECRET", "MARKETO_WEBHOOK_SECRET", "SNOWFLAKE_ACCOUNT", "SNOWFLAKE_USER",
        "SNOWFLAKE_PASSWORD or SNOWFLAKE_PRIVATE_KEY_PATH", "RECIPES_MASKING_KEY",
    }  # fmt: skip
    assert "ITERABLE_CREDENTIALS_BLOCK" in failed["ITERABLE_API_KEY"]


def test_offline_refuses_a_missing_masking_key_for_any_recipe(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ITERABLE_API_KEY", "k")
    monkeypatch.setenv("CUSTOMERSDOT_WEBHOOK_SECRETS", WEBHOOK_SECRET)
    failed = _failed(run_checks(load_settings(), ["customersdot"], offline=True))
    assert set(failed) == {"RECIPES_MASKING_KEY"} and "tag" in failed["RECIPES_MASKING_KEY"]
    broken = CliRunner().invoke(app, ["check", "--offline", "--recipe", "customersdot"])
    assert broken.exit_code == 1 and "RECIPES_MASKING_KEY" in broken.output
    monkeypatch.setenv("RECIPES_MASKING_KEY", MASKING_KEY)
    good = CliRunner().invoke(app, ["check", "--offline", "--recipe", "customersdot"])
    assert good.exit_code == 0, good.output
    assert MASKING_KEY not in good.output


def test_a_recipe_is_checked_only_for_what_it_uses(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RECIPES_MASKING_KEY", MASKING_KEY)
    monkeypatch.setenv("ITERABLE_API_KEY", "k")
    monkeypatch.setenv("CUSTOMERSDOT_WEBHOOK_SECRETS", WEBHOOK_SECRET)
    findings = run_checks(load_settings(), ["customersdot"], offline=True)
    assert _failed(findings) == {}
    # A named block stands in for the variables it replaces.
    monkeypatch.setenv("MARKETO_CREDENTIALS_BLOCK", "marketo-prod")
    monkeypatch.setenv("MARKETO_WEBHOOK_SECRET", "s3cret-value")
    assert _failed(run_checks(load_settings(), ["customersdot", "optouts"], offline=True)) == {}


def test_each_bad_file_is_named_with_its_key_and_the_good_ones_still_pass(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    syncs = tmp_path / "syncs"
    syncs.mkdir()
    shipped = yaml.safe_load((SYNCS_DIR / f"{GITLAB}.yaml").read_text())
    (syncs / f"{GITLAB}.yaml").write_text(yaml.safe_dump(shipped))
    (syncs / "broken.yaml").write_text(yaml.safe_dump(shipped | {"name": "broken", "batch_size": "many"}))
    (syncs / "unparsable.yaml").write_text("name: [unclosed\n")
    policy = tmp_path / "consent.yaml"
    policy.write_text("channels: 3\n")
    monkeypatch.setenv("SYNC_DEFINITIONS_DIR", str(syncs))
    monkeypatch.setenv("CONSENT_POLICY_PATH", str(policy))
    findings = {f.check: f for f in run_checks(load_settings(), offline=True)}
    assert findings[f"sync {GITLAB}"].ok
    assert (
        not findings["sync file broken.yaml"].ok and "batch_size" in findings["sync file broken.yaml"].detail
    )
    assert not findings["sync file unparsable.yaml"].ok
    assert not findings["consent policy"].ok and "consent.yaml" in findings["consent policy"].detail


def test_the_command_prints_a_table_and_exits_non_zero_unless_everything_holds(
    monkeypatch: pytest.MonkeyPatch,
):
    runner = CliRunner()
    broken = runner.invoke(app, ["check", "--offline"])
    assert broken.exit_code == 1
    assert "ITERABLE_API_KEY" in broken.output and "FAILED" in broken.output
    monkeypatch.setenv("ITERABLE_API_KEY", "k")
    monkeypatch.setenv("CUSTOMERSDOT_WEBHOOK_SECRETS", WEBHOOK_SECRET)
    monkeypatch.setenv("RECIPES_MASKING_KEY", MASKING_KEY)
    good = runner.invoke(app, ["check", "--offline", "--recipe", "customersdot"])
    assert good.exit_code == 0, good.output
    assert "everything holds" in good.output
    assert runner.invoke(app, ["check", "--recipe", "nope"]).exit_code == 2


@pytest.fixture
def live(
    monkeypatch: pytest.MonkeyPatch,
    iterable_standin: Any,
    marketo_standin: Any,
    app_database: str,
) -> Iterator[dict[str, Any]]:
    """Every vendor live: the Iterable and Marketo stand-ins, fakesnow with GitLab's model."""
    for name, value in {
        "SNOWFLAKE_ACCOUNT": "fake", "SNOWFLAKE_USER": "fake", "SNOWFLAKE_PASSWORD": "fake",
        "SNOWFLAKE_DATABASE": "ANALYTICS", "SNOWFLAKE_SCHEMA": "PUBLIC",
        "MARKETO_WEBHOOK_SECRET": "s3cret-value", "RECIPES_MASKING_KEY": MASKING_KEY,
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    with fakesnow.patch():
        conn = connect(account="fake", user="fake", password="fake", database="ANALYTICS", schema="PUBLIC")
        seed_model(conn, 20)
        try:
            yield {"iterable": iterable_standin, "marketo": marketo_standin, "warehouse": conn}
        finally:
            conn.close()


def _marketo(standin: Any, secret: str) -> Any:
    """A Marketo client for the stand-in with ``secret``, over its spec-checking transport."""
    from iterable_recipes.clients.marketo import MarketoClient

    return MarketoClient(standin.url, "sandbox-client", secret, transport=standin.transport)


def _live_findings(live: dict[str, Any], **parts: Any) -> dict[str, Any]:
    settings = load_settings()
    marketo = parts.pop("marketo", None) or (lambda: _marketo(live["marketo"], "sandbox-secret"))
    resources = Resources(settings, marketo=marketo, **parts)
    return {f.check: f for f in run_checks(settings, resources=resources)}


def test_live_checks_pass_against_vendors_that_agree(live: dict[str, Any]):
    findings = _live_findings(live)
    assert _failed(list(findings.values())) == {}
    assert {"Iterable API key", "consent policy vs Iterable", "sync field types vs Iterable",
            "sync lists vs Iterable", "Marketo credentials",
            "warehouse and source queries"} <= set(findings)  # fmt: skip
    assert findings["sync lists vs Iterable"].detail == "no sync names a list"


def test_live_checks_name_each_disagreement(live: dict[str, Any]):
    sandbox = live["iterable"].sandbox
    with sandbox.lock:
        sandbox.channels[1]["name"] = "Newsletters"
        sandbox.user_field_types["active_stage_count"] = "string"
    findings = _live_findings(live, marketo=lambda: _marketo(live["marketo"], "wrong"))
    failed = _failed(list(findings.values()))
    assert "Newsletters" in failed["consent policy vs Iterable"]
    assert "active_stage_count" in failed["sync field types vs Iterable"]
    assert "sent as number" in failed["sync field types vs Iterable"]
    assert "Marketo" in failed["Marketo credentials"]
    assert "Iterable API key" not in failed and "warehouse and source queries" not in failed


def test_a_model_that_lost_a_mapped_column_fails_the_warehouse_check(live: dict[str, Any]):
    conn = live["warehouse"]
    conn.cursor().execute(f"ALTER TABLE {MODEL_TABLE} DROP COLUMN GLM_SOURCE")
    failed = _failed(list(_live_findings(live).values()))
    assert "GLM_SOURCE" in failed["warehouse and source queries"]


def test_the_list_check_confirms_each_list_sync_names_a_static_list(
    live: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    sandbox = live["iterable"].sandbox
    real = sandbox.create_list("Trial onboarding")
    dynamic = sandbox.create_list("Everyone on a plan", list_type="Dynamic")
    folder = tmp_path / "syncs"
    folder.mkdir()
    member = {"source": {"table": MODEL_TABLE}, "identity": {"column": "EMAIL_ADDRESS", "kind": "email"},
              "kind": "list_membership"}  # fmt: skip
    for name, list_id in {"good_list": real, "gone_list": 987_654, "dynamic_list": dynamic}.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(member | {"list_id": list_id}))
    monkeypatch.setenv("SYNC_DEFINITIONS_DIR", str(folder))
    failed = _failed(list(_live_findings(live).values()))
    problem = failed["sync lists vs Iterable"]
    assert "gone_list.yaml: list_id: list 987654 is not in the Iterable project" in problem
    assert f"dynamic_list.yaml: list_id: list {dynamic} is a Dynamic list" in problem
    assert "good_list" not in problem
    lists_asked = live["iterable"].sandbox.stats()["requests"]["lists"]
    assert lists_asked == {"200": 1}  # one GET /api/lists for every list sync

    (folder / "gone_list.yaml").unlink()
    (folder / "dynamic_list.yaml").unlink()
    findings = _live_findings(live)
    assert findings["sync lists vs Iterable"].ok
    assert findings["sync lists vs Iterable"].detail == "1 list sync(s) name static lists of the project"


def test_a_key_of_the_other_data_center_names_the_region_to_set(monkeypatch: pytest.MonkeyPatch):
    servers = {
        "us": ServerThread(create_iterable(SandboxOptions(api_key="us-key"))).start(),
        "eu": ServerThread(create_iterable(SandboxOptions(api_key="eu-key"))).start(),
    }
    try:
        monkeypatch.setenv("ITERABLE_API_KEY", "eu-key")
        settings = load_settings()
        from iterable_recipes.clients.iterable import IterableClient

        client = IterableClient("eu-key", base_url=servers["us"].url)
        regions = {region: server.url for region, server in servers.items()}
        with Resources(settings, iterable=client), pytest.raises(CheckFailed) as refused:
            check_iterable_key(Resources(settings, iterable=client), regions=regions)
        assert "set ITERABLE_REGION=eu" in str(refused.value)
        assert "eu-key" not in str(refused.value)
        client.close()
    finally:
        for server in servers.values():
            server.stop()


def test_a_flow_trusts_a_passed_check_for_the_configured_time_and_never_a_failed_one(
    iterable_standin: Any, app_database: str, test_parts: dict[str, Any], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("RECIPES_CHECK_CACHE_SECONDS", "600")
    now = [1_000_000.0]
    sandbox = iterable_standin.sandbox

    def channel_reads() -> int:
        return sum(sandbox.stats()["requests"].get("channels", {}).values())

    with Resources(load_settings(), iterable=test_parts["iterable"]) as resources:
        check_at_start(resources, "iterable_key", clock=lambda: now[0])
        assert channel_reads() == 1
        now[0] += 599
        assert "trusted" in check_at_start(resources, "iterable_key", clock=lambda: now[0])
        assert channel_reads() == 1
        now[0] += 2
        check_at_start(resources, "iterable_key", clock=lambda: now[0])
        assert channel_reads() == 2
        # A check that failed is never trusted: the next run checks again.
        with sandbox.lock:
            sandbox.channels[1]["name"] = "Newsletters"
        for _ in range(2):
            with pytest.raises(CheckFailed):
                check_at_start(resources, "consent", clock=lambda: now[0])
        assert channel_reads() == 4


def test_the_receiver_names_a_missing_webhook_secret_and_still_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from iterable_recipes.receiver.__main__ import receiver_checks_pass

    monkeypatch.setenv("CUSTOMERSDOT_WEBHOOK_SECRETS", WEBHOOK_SECRET)
    assert receiver_checks_pass(load_settings())
    err = capsys.readouterr().err
    assert "MARKETO_WEBHOOK_SECRET" in err and "CUSTOMERSDOT_WEBHOOK_SECRETS" not in err
