"""Settings: empty values are unset, the region in any case, a bad value one clean line at every entry."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iterable_recipes.clients.iterable import BASE_URLS
from iterable_recipes.settings import SettingsError, load_settings

VALID_SECRET = "whsec_" + base64.b64encode(b"a valid secret of thirty-two b!!").decode()
NO_PREFIX = "c2VjcmV0LXdpdGhvdXQtcHJlZml4"
NOT_BASE64 = "whsec_not*base64*at*all"
BAD = {
    "ITERABLE_REGION": "uk",
    "CUSTOMERSDOT_WEBHOOK_SECRETS": f"{VALID_SECRET},{NO_PREFIX},{NOT_BASE64}",
    "INBOX_LEASE_SECONDS": "soon",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No setting of this test's from the environment or a .env, the working folder empty."""
    for name in list(os.environ):
        if name.startswith(("ITERABLE_", "CUSTOMERSDOT_", "INBOX_", "MARKETO_", "RECIPES_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_empty_values_from_the_environment_or_dotenv_count_as_unset(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / ".env").write_text("ITERABLE_BASE_URL=\nINBOX_LEASE_SECONDS=\nITERABLE_REGION=eu\n")
    assert load_settings().iterable_url == BASE_URLS["eu"]
    assert load_settings().inbox_lease_seconds == 300
    monkeypatch.setenv("ITERABLE_REGION", "")
    monkeypatch.setenv("CUSTOMERSDOT_WEBHOOK_SECRETS", "")
    (clean_env / ".env").unlink()
    settings = load_settings()
    assert settings.iterable_url == BASE_URLS["us"] and settings.customersdot_webhook_secrets == []


@pytest.mark.parametrize(("given", "region"), [("US", "us"), ("us", "us"), ("EU", "eu"), (" Eu ", "eu")])
def test_the_region_is_read_in_any_case(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, given: str, region: str
) -> None:
    monkeypatch.setenv("ITERABLE_REGION", given)
    assert load_settings().iterable_url == BASE_URLS[region]


def test_each_bad_setting_is_one_line_naming_its_variable_and_never_the_secret(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in BAD.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    lines = str(err.value).splitlines()
    assert [line.split(":")[0] for line in lines] == sorted(BAD), lines
    secrets, lease, region = lines
    assert "'uk'" in region and "us, eu" in region and "any case" in region
    assert "entry 2 lacks the whsec_ prefix" in secrets and "entry 3 is not valid base64" in secrets
    assert "integer" in lease
    for secret in (VALID_SECRET, NO_PREFIX, NOT_BASE64, NOT_BASE64.removeprefix("whsec_")):
        assert secret not in str(err.value)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ITERABLE_", "CUSTOMERSDOT_", "INBOX_"))}
    return subprocess.run(args, cwd=cwd, env=env | BAD, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "command",
    [
        [str(Path(sys.executable).parent / "recipes"), "inbox", "list"],
        [sys.executable, "-m", "iterable_recipes.receiver", "--port", "0"],
    ],
    ids=["recipes", "receiver"],
)
def test_entry_points_report_bad_settings_one_line_each_without_a_traceback(
    clean_env: Path, command: list[str]
) -> None:
    done = _run(command, clean_env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    report = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr and "pydantic" not in done.stderr, done.stderr
    assert [line.split(":")[0] for line in report[1:]] == sorted(BAD), report
    assert report[0].startswith("Invalid settings"), report
    assert NO_PREFIX not in done.stderr + done.stdout


def test_a_short_masking_key_is_refused_without_being_quoted(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECIPES_MASKING_KEY", "short-key")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert "RECIPES_MASKING_KEY" in str(refused.value) and "short-key" not in str(refused.value)
    monkeypatch.setenv("RECIPES_MASKING_KEY", "k" * 32)
    assert load_settings().masking_key == "k" * 32
    monkeypatch.delenv("RECIPES_MASKING_KEY")
    assert load_settings().masking_key is None


def test_the_rate_share_and_margin_are_read_and_the_old_headroom_is_refused_with_its_replacement(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ITERABLE_RATE_SHARE", "0.6")
    monkeypatch.setenv("ITERABLE_RATE_MARGIN_SECONDS", "0.01")
    settings = load_settings()
    assert (settings.iterable_rate_share, settings.iterable_rate_margin_seconds) == (0.6, 0.01)
    monkeypatch.setenv("ITERABLE_RATE_SHARE", "1.5")
    monkeypatch.setenv("ITERABLE_RATE_HEADROOM", "0.05")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert set(refused.value.problems) == {"ITERABLE_RATE_SHARE", "ITERABLE_RATE_HEADROOM"}
    assert "ITERABLE_RATE_SHARE=0.952" in refused.value.problems["ITERABLE_RATE_HEADROOM"]
