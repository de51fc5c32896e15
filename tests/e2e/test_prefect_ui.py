"""One finished run of each recipe as an operator sees it in the Prefect UI, in a real headless chromium:
its Artifacts tab lists the run's tables, its Logs tab shows the recipe's own sentences, and neither the
rendered DOM nor the page's text holds an address in the clear. Screenshots are kept under tmp_path.

The suite's Prefect server (tests/conftest.py) runs without its UI (Prefect's test harness switches it
off), so Prefect's own UI bundle is served here, pointed at that server's API.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from iterable_recipes.masking import mask_emails
from iterable_recipes.store.inbox import Inbox, NewItem
from tests.conftest import IN_CI
from tests.e2e.browser import Page, browser, chromium_path
from tests.integration import customersdot_event, fakesnow_warehouse, flow_run_id

pytestmark = pytest.mark.usefixtures("prefect_server")

SYNC = "contacts_upsert"
# What each run's Artifacts tab must list: its counts table, and its per-record table of what did not
# go through (identity, reference, status, error, next).
COUNTS_KEYS = {
    "customersdot": "customersdot-counts",
    "optouts": "marketo-opt-outs-counts",
    "sync": f"sync-{SYNC.replace('_', '-')}-counts",
}
NOT_SENT_KEYS = {
    "customersdot": "customersdot-not-sent",
    "optouts": "marketo-opt-outs-not-sent",
    "sync": f"sync-{SYNC.replace('_', '-')}-not-sent",
}
# The reference each per-record table gives its records, as its page shows them.
REFERENCES = {"customersdot": "inbox ", "optouts": "lead ", "sync": "row "}
# A sentence of each recipe's own in its run's logs (flows/*.py build them).
SENTENCES = {
    "customersdot": "Drained 3 CustomersDot events in 1 batch;",
    "optouts": "Opt-out drain done: 3 unsubscribe(s)",
    "sync": f"Sync {SYNC} done:",
}


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; under CI=true its absence fails (the Makefile's test target installs it)."""
    path = chromium_path()
    if path is None:
        message = "chromium is not installed (apt-get install chromium; under CI=true `make test` does)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def prefect_ui(prefect_server: None) -> Iterator[str]:
    """Prefect's own UI bundle, served on a free port and reading the suite's Prefect server; its URL."""
    from prefect.server.api.server import create_ui_app
    from prefect.settings import PREFECT_API_URL
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    from dev.standins.serving import ServerThread

    # What the server's own /ui-settings answers when it serves the UI, with the harness's API URL.
    settings = {
        "api_url": PREFECT_API_URL.value(),
        "csrf_enabled": False,
        "auth": None,
        "flags": [],
        "default_ui": "v1",
        "available_uis": ["v1"],
        "v1_base_url": "/",
        "v2_base_url": None,
    }
    app = Starlette(
        routes=[
            Route("/ui-settings", lambda _: JSONResponse(settings)),
            Mount("/", create_ui_app(ephemeral=False)),
        ]
    )
    server = ServerThread(app).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def warehouse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """fakesnow in patch mode, and an upsert twin of GitLab's sync (no look-ups) as the only sync."""

    from iterable_recipes.sync.definitions import SYNCS_DIR

    shipped = yaml.safe_load((SYNCS_DIR / "gitlab_marketing_contacts.yaml").read_text())
    syncs = tmp_path / "syncs"
    syncs.mkdir()
    (syncs / f"{SYNC}.yaml").write_text(yaml.safe_dump(shipped | {"name": SYNC, "mode": "upsert"}))
    with fakesnow_warehouse(monkeypatch, syncs) as conn:
        yield conn


def _customersdot_run(iterable: Any, app_database: str) -> Any:
    """A drain of three events, one of them dead (Iterable holds its field as another type)."""
    from flows.customersdot_events import customersdot_drain

    iterable.sandbox.seed_users([{"email": "seeded@example.com", "dataFields": {"employeeBucket": 5}}])
    bodies = [customersdot_event(employeeBucket="1-99"), customersdot_event(), customersdot_event()]
    inbox = Inbox(app_database)
    inbox.add_many([NewItem("customersdot", b["id"], b["type"], b) for b in bodies])
    inbox.dispose()
    state = customersdot_drain(return_state=True)
    assert state.is_completed() and state.result()["dead"] == 1, state
    return flow_run_id(state)


def _optouts_run(iterable: Any, marketo: Any) -> Any:
    """An opt-out drain of three unsubscribes whose subscription write Iterable refuses once (failed)."""
    from flows.marketo_unsubscribes import marketo_optout_drain, marketo_poll

    people = ["known.one@example.com", "known.two@example.com", "nobody.here@example.com"]
    iterable.sandbox.seed_users([{"email": e} for e in people[:2]])
    for lead_id, email in enumerate(people, start=1):
        marketo.sandbox.add_lead(lead_id, email)
        marketo.sandbox.unsubscribe(lead_id, how="link")
    marketo_poll(start=datetime.now(UTC) - timedelta(hours=1), drain=False)
    iterable.sandbox.set_faults(endpoint="users/bulkUpdateSubscriptions", fail_next=[400])
    state = marketo_optout_drain(batch_size=5, return_state=True)
    assert state.is_completed() and state.result()["failed"] >= 1, state
    return flow_run_id(state)


def _sync_run(warehouse: Any) -> Any:
    """A sync of 20 rows, two of which Iterable rejects (not an address)."""
    from dev.warehouse import MODEL_TABLE, seed_model
    from flows.snowflake_sync import snowflake_sync

    seed_model(warehouse, 20)
    warehouse.cursor().execute(
        f"UPDATE {MODEL_TABLE} SET EMAIL_ADDRESS = 'broken-' || GITLAB_DOTCOM_USER_ID || '@' "
        "WHERE GITLAB_DOTCOM_USER_ID < 2"
    )
    state = snowflake_sync(SYNC, return_state=True)
    assert state.is_completed() and state.result()["rejected"] == 2, state
    return flow_run_id(state)


def _artifact_keys(run_id: Any) -> dict[str, str]:
    """The artifacts flow run ``run_id`` published, key -> id, read from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    return {a.key: str(a.id) for a in artifacts if a.key}


def _no_raw_address(page: Page, where: str) -> None:
    """Neither the rendered DOM nor the text holds anything the project's masker would mask."""
    for name, content in (("DOM", page.dom()), ("text", page.text())):
        masked = mask_emails(content)
        if masked != content:
            at = next(i for i, (a, b) in enumerate(zip(content, masked, strict=False)) if a != b)
            around = content[max(0, at - 40) : at + 60]
            raise AssertionError(f"{where}: the {name} holds an address: …{around}…")
        assert "@example.com" not in content, f"{where}: the {name} holds a seeded address"


def _shot(page: Page, folder: Path, name: str) -> Path:
    path = page.screenshot(folder / f"{name}.png")
    assert path.stat().st_size > 10_000, f"{path} is nearly empty"
    print(f"screenshot: {path}")
    return path


def test_each_recipe_run_shows_its_tables_and_sentences_in_the_prefect_ui(
    chromium, prefect_ui, iterable_standin, marketo_standin, app_database, warehouse, tmp_path
):
    runs = {
        "customersdot": _customersdot_run(iterable_standin, app_database),
        "optouts": _optouts_run(iterable_standin, marketo_standin),
        "sync": _sync_run(warehouse),
    }
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # the runs' last log lines are on the server before the UI asks
    keys = {recipe: _artifact_keys(run_id) for recipe, run_id in runs.items()}
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with browser(tmp_path / "chromium", executable=chromium) as page:
        for recipe, run_id in runs.items():
            page.open(f"{prefect_ui}/runs/flow-run/{run_id}")
            page.wait_for_text("Job Variables")  # the run's tabs are up
            # The tab in the address (?tab=Artifacts) is dropped while the run loads: click it instead.
            page.click("Artifacts")
            page.wait_for_text(COUNTS_KEYS[recipe], NOT_SENT_KEYS[recipe])
            _shot(page, shots, f"{recipe}-artifacts")
            _no_raw_address(page, f"{recipe} artifacts")
            # The per-record table itself, on its artifact's page: its rows and their columns.
            page.open(f"{prefect_ui}/artifacts/artifact/{keys[recipe][NOT_SENT_KEYS[recipe]]}")
            page.wait_for_text(REFERENCES[recipe], "next", "error")
            _shot(page, shots, f"{recipe}-not-sent")
            _no_raw_address(page, f"{recipe} not-sent table")
            page.open(f"{prefect_ui}/runs/flow-run/{run_id}")
            page.wait_for_text("Job Variables")
            page.click("Logs")
            page.wait_for_text(SENTENCES[recipe])
            page.show(SENTENCES[recipe])
            _shot(page, shots, f"{recipe}-logs")
            _no_raw_address(page, f"{recipe} logs")
    assert len(list(shots.glob("*.png"))) == 9
