"""The receiver's own OpenAPI document is the truth about what it accepts: schemathesis, run against the
served document with every check and a hook that signs CustomersDot requests and adds the Marketo secret,
finds no failure. It tests the document and the answers over a real socket, whatever serves them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dev.standins.serving import serving
from iterable_recipes.receiver import Nudger, create_app
from iterable_recipes.settings import Settings
from iterable_recipes.store import Inbox, migrate
from tests.iterable_recipes.receiver.conftest import RecordingTrigger
from tests.iterable_recipes.receiver.openapi.hooks import CUSTOMERSDOT_SECRET, MARKETO_HEADER, MARKETO_SECRET

ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture
def served_receiver(tmp_path: Path) -> Iterator[str]:
    """The receiver on a real socket, configured with the hooks' test secrets."""
    url = f"sqlite:///{tmp_path / 'recipes.db'}"
    migrate(url)
    settings = Settings(
        recipes_database_url=url,
        customersdot_webhook_secrets=[CUSTOMERSDOT_SECRET],
        marketo_webhook_secret=[MARKETO_SECRET],
        marketo_webhook_header=MARKETO_HEADER,
        webhook_max_body_bytes=4096,
    )
    inbox = Inbox(url)
    nudger = Nudger(RecordingTrigger(), 0.2).start()
    try:
        with serving(create_app(settings, nudger, inbox=inbox)) as base:
            yield base
    finally:
        nudger.stop()
        inbox.dispose()


def run_schemathesis(base: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``schemathesis run`` on the served document with every check, our hooks, deterministic data."""
    env = os.environ | {
        "SCHEMATHESIS_HOOKS": "tests.iterable_recipes.receiver.openapi.hooks",
        "PYTHONPATH": str(ROOT),
        "NO_COLOR": "1",
    }
    argv = [
        str(Path(sys.executable).parent / "schemathesis"), "run", f"{base}/openapi.json",
        "--checks", "all", "--max-examples", os.environ.get("SCHEMATHESIS_EXAMPLES", "40"),
        "--generation-deterministic", "--workers", "1", "--suppress-health-check", "all",
        "--report-dir", str(tmp_path / "report"), *extra,
    ]  # fmt: skip
    # Its cache folder goes to the test's own folder, not the checkout.
    return subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)


def test_schemathesis_finds_no_failure_against_the_published_document(
    served_receiver: str, tmp_path: Path
) -> None:
    result = run_schemathesis(served_receiver, tmp_path)
    tail = "\n".join(result.stdout.splitlines()[-400:])
    assert result.returncode == 0, tail
