"""The three flows leave no raw email or secret in Prefect (scan-pii), and the scanner does catch a plant."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dev.standins.serving import serving
from dev.warehouse import seed_model
from iterable_recipes.cli.scan import prefect_client, scan
from tests import integration
from tests.flows.test_snowflake_sync import GITLAB, _emails, warehouse
from tests.integration import customersdot_event, signed

pytestmark = pytest.mark.usefixtures("prefect_server")
app_database = integration.app_database
iterable_standin = integration.iterable_standin
marketo_standin = integration.marketo_standin
__all__ = ["warehouse"]
MARKETO_SECRET = "marketo-secret-for-the-pii-scan"
SECRETS = ["ITERABLE_API_KEY", "CUSTOMERSDOT_WEBHOOK_SECRETS", "MARKETO_WEBHOOK_SECRET", "SNOWFLAKE_PASSWORD"]


def _run_all_three(iterable: Any, marketo: Any, conn: Any, tmp_path: Path) -> list[str]:
    """Webhooks in, the three recipes run, with look-ups that fail; returns the people's emails."""
    from flows.customersdot_events import customersdot_drain
    from flows.marketo_unsubscribes import marketo_optout_drain, marketo_poll
    from flows.snowflake_sync import snowflake_sync
    from iterable_recipes.receiver.app import create_app

    events = [customersdot_event("saas_trial_started"), customersdot_event("namespace_user_invited")]
    events.append(customersdot_event("free_registration", registration_kind="company"))
    with serving(create_app()) as base, httpx.Client(base_url=base) as http:
        for body in events:
            raw, headers = signed(body)
            assert http.post("/webhooks/customersdot", content=raw, headers=headers).status_code == 202
        body = {"email": "webhook.lead@example.com", "leadId": "91", "unsubscribedAt": "2026-11-27T10:00:00Z"}
        answer = http.post(
            "/webhooks/marketo/unsubscribe", json=body, headers={"X-Recipes-Secret": MARKETO_SECRET}
        )
        assert answer.status_code == 202
    # Profile writes and event tracking fail permanently for a while: errors become outcomes and states.
    iterable.sandbox.set_faults(endpoint="users/bulkUpdate", fail_next=[400])
    customersdot_drain()
    iterable.sandbox.clear_faults()

    iterable.sandbox.seed_users([{"email": "known.one@example.com", "subscribedMessageTypeIds": [101]}])
    for lead, email in [
        (1, "known.one@example.com"),
        (2, "unknown.two@example.com"),
        (3, "faulty.three@example.com"),
    ]:
        marketo.sandbox.add_lead(lead, email)
        marketo.sandbox.unsubscribe(lead, how="link")
    # Look-ups fail (500s past the retries, then a permanent 400): failures name the person by URL.
    iterable.sandbox.set_faults(endpoint="users/getByEmail", fail_next=[400, 500, 500, 500, 500, 500, 500])
    marketo_poll(start=datetime.now(UTC) - timedelta(hours=1), return_state=True)
    marketo_optout_drain(return_state=True)
    iterable.sandbox.clear_faults()

    seed_model(conn, 40)
    iterable.sandbox.seed_users([{"email": e} for e in _emails(conn)[:20]])
    iterable.sandbox.set_faults(endpoint="users/getByEmail", error_rate=0.3, seed=7)
    snowflake_sync(GITLAB, return_state=True)
    iterable.sandbox.set_faults(endpoint="users/bulkUpdate", fail_next=[400])
    snowflake_sync(GITLAB, return_state=True)
    iterable.sandbox.clear_faults()
    return [e["person"]["email"] for e in events] + _emails(conn)


def test_the_three_flows_leave_no_email_or_secret_in_prefect(
    iterable_standin: Any,
    marketo_standin: Any,
    app_database: str,
    warehouse: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("MARKETO_WEBHOOK_SECRET", MARKETO_SECRET)
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", "fakesnow-password-for-the-scan")
    caplog.set_level(logging.INFO)
    since = datetime.now(UTC) - timedelta(seconds=1)
    emails = _run_all_three(iterable_standin, marketo_standin, warehouse, tmp_path)
    printed = tmp_path / "printed.txt"
    # What the process printed and logged (in-process loggers too, not only those shipped to Prefect).
    printed.write_text("".join(capsys.readouterr()) + caplog.text)

    findings, notes = scan(since, [printed], SECRETS)

    assert notes == []  # every secret was set and searched for
    assert len(emails) > 40
    assert findings.scanned["flow run parameters"] >= 5, findings.scanned
    for place in ("logs", "task run state messages", "events", f"file {printed}"):
        assert findings.scanned[place] > 0, (place, findings.scanned)
    assert findings.total == 0, findings.lines()


def test_the_scan_catches_an_email_in_a_log_and_in_an_artifact(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from prefect import flow
    from prefect.artifacts import create_markdown_artifact

    marker = uuid.uuid4().hex[:8]
    secret = f"planted-secret-{marker}"
    monkeypatch.setenv("PLANTED_SECRET", secret)

    @flow(name=f"plant-{marker}")
    def plant() -> None:
        from prefect.runtime import flow_run

        # Straight to the API, past the masking record factory, as a careless process might.
        log = {"name": "plant", "level": 20, "message": f"looked up planted.{marker}@example.com"}
        log |= {"timestamp": datetime.now(UTC).isoformat(), "flow_run_id": flow_run.id}
        with prefect_client() as client:
            client.post("logs/", json=[log]).raise_for_status()
        create_markdown_artifact(
            f"| email |\n|---|\n| artifact.{marker}%40example.org |", key=f"plant-{marker}"
        )
        create_markdown_artifact(f"key {secret}", key=f"secret-{marker}")

    since = datetime.now(UTC) - timedelta(seconds=1)
    plant()
    log_file = tmp_path / "run.log"
    log_file.write_text(f"printed ünïcode.{marker}@exämple.com\n")

    findings, _ = scan(since, [log_file], ["PLANTED_SECRET"], results=False)

    assert findings.emails["logs"] == 1, findings.lines()
    assert findings.emails["artifacts"] == 1, findings.lines()
    assert findings.emails[f"file {log_file}"] == 1, findings.lines()
    assert findings.secrets[("artifacts", "PLANTED_SECRET")] == 1
    report = "\n".join(findings.lines())
    assert marker not in report and secret not in report
    assert "p***@e***.com" in report and "a***%40e***.org" in report
