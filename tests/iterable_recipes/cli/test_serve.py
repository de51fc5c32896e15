import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from iterable_recipes.cli.deployments import PREFECT_FILE, available, read_deployments, to_runner_deployment
from iterable_recipes.cli.local_stack import free_port
from iterable_recipes.cli.operating_state import OnServer, kept_active
from iterable_recipes.cli.serve import build_deployments, served_names
from iterable_recipes.settings import Settings
from iterable_recipes.sync.definitions import all_sync_definitions


def test_prefect_yaml_declares_the_drains_the_poll_and_one_deployment_per_sync():
    specs = {s.name: s for s in read_deployments()}
    assert specs["customersdot-drain"].concurrency_limit is None
    assert specs["marketo-opt-out-drain"].concurrency_limit is None
    assert specs["marketo-unsubscribe-poll"].concurrency_limit == 1
    reconciliation = specs["consent-reconciliation"]
    assert reconciliation.parameters == {"repair": False}
    assert [s["cron"] for s in reconciliation.schedules] == ["30 5 * * *"]  # daily
    for name in all_sync_definitions():
        spec = specs[f"snowflake-sync-{name.replace('_', '-')}"]
        assert spec.parameters == {"sync": name}
        assert spec.concurrency_limit == 1
    for spec in specs.values():
        assert spec.schedules and all(s["timezone"] == "UTC" for s in spec.schedules), spec.name


def test_the_receiver_nudges_deployments_that_prefect_yaml_declares():
    # The receiver creates runs by "flow/deployment" name from settings; both must exist in the file.
    names = served_names()
    defaults = Settings(_env_file=None)
    assert defaults.customersdot_drain_deployment in names
    assert defaults.optout_drain_deployment in names


def test_served_deployments_carry_the_file_schedules_parameters_and_limits():
    built = {d.name: d for d in (to_runner_deployment(s) for s in read_deployments() if available(s))}
    drain = built["customersdot-drain"]
    assert drain.concurrency_limit is None
    assert [(s.schedule.cron, s.schedule.timezone) for s in drain.schedules] == [("*/15 * * * *", "UTC")]
    poll = built["marketo-unsubscribe-poll"]
    assert poll.concurrency_limit == 1
    assert poll.concurrency_options.collision_strategy == "CANCEL_NEW"
    sync = built["snowflake-sync-gitlab-marketing-contacts"]
    assert sync.parameters == {"sync": "gitlab_marketing_contacts"}
    assert sync.entrypoint == "flows/snowflake_sync.py:snowflake_sync"
    assert [s.schedule.cron for s in sync.schedules] == ["0 6 * * *"]


def test_every_schedule_of_prefect_yaml_has_a_slug_of_its_own():
    # Serve keeps a schedule's active flag by its slug, and `prefect deploy` patches a schedule by it.
    for spec in read_deployments():
        slugs = [s.get("slug") for s in spec.schedules]
        assert all(slugs) and len(set(slugs)) == len(slugs), spec.name


def runs_a_day(schedule: dict) -> int:
    """How many runs a prefect.yaml schedule (cron, or interval in seconds) makes in one UTC day."""
    from itertools import takewhile

    from cronsim import CronSim

    if "interval" in schedule:
        return int(timedelta(days=1) / timedelta(seconds=schedule["interval"]))
    assert schedule.get("timezone") == "UTC"
    start = datetime(2026, 3, 2, tzinfo=UTC) - timedelta(microseconds=1)  # the day's 00:00 counts
    end = start + timedelta(days=1)
    return sum(1 for _ in takewhile(lambda at: at < end, CronSim(schedule["cron"], start)))


def test_the_drains_schedules_are_rare_backstops_of_at_most_100_runs_a_day():
    # The receiver's nudge and due-work watcher start the drains when work is due; a schedule's runs
    # mostly find nothing, and a drain may make at most 100 empty runs a day.
    drains = [s for s in read_deployments() if s.name in ("customersdot-drain", "marketo-opt-out-drain")]
    assert len(drains) == 2
    for spec in drains:
        assert 0 < sum(runs_a_day(s) for s in spec.schedules) <= 100, spec.name
    assert runs_a_day({"cron": "* * * * *", "timezone": "UTC"}) == 1440  # the count itself is right


def test_an_interval_schedule_without_an_anchor_in_prefect_yaml_keeps_its_flag_whatever_its_anchor():
    from prefect.client.schemas.objects import DeploymentSchedule
    from prefect.client.schemas.schedules import IntervalSchedule

    def every(minutes, year):
        anchor = datetime(year, 1, 1, tzinfo=UTC)
        return IntervalSchedule(interval=timedelta(minutes=minutes), anchor_date=anchor, timezone="UTC")

    applied = DeploymentSchedule(schedule=every(5, 2020), active=False, slug="five")
    on_server = OnServer(id=None, paused=False, schedules=(applied,))
    # Built anew at each start, an interval without a file anchor is anchored at that moment.
    assert kept_active(on_server, "five", every(5, 2026), anchored=False) is False
    assert kept_active(on_server, "five", every(5, 2026), anchored=True) is None  # the file's anchor moved
    assert kept_active(on_server, "five", every(10, 2020), anchored=False) is None  # a new interval
    assert kept_active(on_server, "other", every(5, 2020), anchored=False) is None  # another schedule


DRAIN = "customersdot-events/customersdot-drain"
POLL = "marketo-unsubscribe-poll/marketo-unsubscribe-poll"
SYNC = "snowflake-sync/snowflake-sync-gitlab-marketing-contacts"


def flags(client, name):
    """(paused, {slug: (active, cron, schedule id)}) of a deployment on the server."""
    deployment = client.read_deployment_by_name(name)
    return deployment.paused, {s.slug: (s.active, s.schedule.cron, s.id) for s in deployment.schedules}


def test_a_restart_of_serve_keeps_a_paused_deployment_and_an_inactive_schedule(prefect_client, register):
    register(build_deployments())
    # New deployments take prefect.yaml's flags.
    paused, schedules = flags(prefect_client, POLL)
    assert not paused and [active for active, _, _ in schedules.values()] == [True]
    poll = prefect_client.read_deployment_by_name(POLL)
    drain = prefect_client.read_deployment_by_name(DRAIN)
    prefect_client.pause_deployment(poll.id)
    prefect_client.update_deployment_schedule(drain.id, drain.schedules[0].id, active=False)
    before = {name: flags(prefect_client, name) for name in (POLL, DRAIN)}

    register(build_deployments())  # serve started again

    assert flags(prefect_client, POLL) == before[POLL]  # still paused, the same schedule
    paused, schedules = flags(prefect_client, DRAIN)
    assert not paused and schedules["every-15-minutes"] == before[DRAIN][1]["every-15-minutes"]
    assert schedules["every-15-minutes"][0] is False  # still switched off, not rewritten


def test_serve_rewrites_only_a_schedule_whose_definition_changed_in_prefect_yaml(
    prefect_client, register, tmp_path
):
    register(build_deployments())
    for name in (POLL, DRAIN):
        deployment = prefect_client.read_deployment_by_name(name)
        prefect_client.update_deployment_schedule(deployment.id, deployment.schedules[0].id, active=False)
    drain_before = flags(prefect_client, DRAIN)
    edited = PREFECT_FILE.read_text().replace('cron: "*/5 * * * *"', 'cron: "*/10 * * * *"')
    edited = edited.replace("slug: daily-0600", "slug: daily-six")  # the sync's schedule, renamed
    assert edited.count("*/10") == 1 and edited.count("daily-six") == 1
    copy = tmp_path / "prefect.yaml"
    copy.write_text(edited)

    register(build_deployments(path=copy))

    _, poll = flags(prefect_client, POLL)
    # The changed definition is rewritten, and with it prefect.yaml's active flag.
    assert [(active, cron) for active, cron, _ in poll.values()] == [(True, "*/10 * * * *")]
    assert flags(prefect_client, DRAIN) == drain_before  # unchanged: still off, the same schedule
    _, sync = flags(prefect_client, SYNC)
    assert list(sync) == ["daily-six"]  # the schedule prefect.yaml no longer has is gone


SERVE_SETTINGS = {
    "ITERABLE_API_KEY": "unused-key",
    "MARKETO_BASE_URL": "http://127.0.0.1:9",
    "MARKETO_CLIENT_ID": "unused",
    "MARKETO_CLIENT_SECRET": "unused",
    "MARKETO_WEBHOOK_SECRET": "unused-secret",
    "SNOWFLAKE_ACCOUNT": "unused",
    "SNOWFLAKE_USER": "unused",
    "SNOWFLAKE_PASSWORD": "unused",
    "RECIPES_MASKING_KEY": "unused-masking-key-0123456789",
}


def start_serve(api_url, folder, query_seconds=60):
    """`recipes serve` as its own process (a session of its own) against the Prefect API at ``api_url``."""
    recipes = shutil.which("recipes", path=str(Path(sys.executable).parent)) or "recipes"
    # Settings for every part, so serve's checks at start pass; no vendor is reached (offline checks,
    # and by default no run is asked for again while the test looks at the flags).
    argv = [recipes, "serve", "--port", str(free_port()), "--query-seconds", str(query_seconds)]
    argv.append("--offline-checks")
    env = os.environ | {"PREFECT_API_URL": api_url} | SERVE_SETTINGS
    with (folder / "serve.log").open("ab") as log:
        return subprocess.Popen(
            argv, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_registered(client, process, since=None):
    """Wait until every served deployment was registered (after ``since``, their update times)."""
    deadline = time.monotonic() + 300  # two busy cores: generous, never asserted
    while time.monotonic() < deadline:
        assert process.poll() is None, "recipes serve exited; see serve.log"
        found = {d.name: d.updated for d in client.read_deployments() if d.name in NAMES}
        if len(found) == len(NAMES) and (since is None or all(found[n] > since[n] for n in NAMES)):
            return found
        time.sleep(0.5)
    raise AssertionError("recipes serve did not register its deployments")


def stop_serve(process):
    """Interrupt serve as Ctrl-C does and wait for it to end."""
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=120)


NAMES = {name.split("/", 1)[1] for name in (DRAIN, POLL, SYNC)}


def test_stopping_and_starting_recipes_serve_leaves_the_flags_as_operators_set_them(
    served_api_url, prefect_client, app_database, tmp_path
):
    serve = start_serve(served_api_url, tmp_path)
    try:
        registered = wait_registered(prefect_client, serve)
        drain = prefect_client.read_deployment_by_name(DRAIN)
        prefect_client.update_deployment_schedule(drain.id, drain.schedules[0].id, active=False)
        stop_serve(serve)
        # Stopping serve paused nothing (Prefect's serve asks to by default; the next start would keep it).
        assert [prefect_client.read_deployment_by_name(n).paused for n in (DRAIN, POLL, SYNC)] == [False] * 3
        prefect_client.pause_deployment(prefect_client.read_deployment_by_name(POLL).id)
        before = {name: flags(prefect_client, name) for name in (DRAIN, POLL)}

        serve = start_serve(served_api_url, tmp_path)
        wait_registered(prefect_client, serve, since=registered)

        assert {name: flags(prefect_client, name) for name in (DRAIN, POLL)} == before
    finally:
        if serve.poll() is None:
            stop_serve(serve)


def test_prefect_deploy_all_after_serve_unpauses_a_deployment_and_leaves_a_schedule_off(
    served_api_url, prefect_client, register
):
    # What the README says `prefect deploy --all` resets, on a server `recipes serve` registered.
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with contextlib.suppress(ObjectAlreadyExists):
        prefect_client.create_work_pool(WorkPoolCreate(name="recipes-process", type="process"))
    register(build_deployments())
    poll = prefect_client.read_deployment_by_name(POLL)
    prefect_client.pause_deployment(poll.id)
    prefect_client.update_deployment_schedule(poll.id, poll.schedules[0].id, active=False)
    _, before = flags(prefect_client, POLL)

    checkout = PREFECT_FILE.parent
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    argv = [prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE)]
    env = os.environ | {"PREFECT_API_URL": served_api_url, "RECIPES_PROJECT_DIR": str(checkout)}
    done = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    paused, after = flags(prefect_client, POLL)
    assert not paused  # back to prefect.yaml's
    assert after == before  # the same schedule, still off: updated in place by its slug


def test_plain_serve_with_a_setting_missing_exits_at_once_naming_every_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from iterable_recipes.cli.main import app

    monkeypatch.chdir(tmp_path)
    for name in ("ITERABLE_API_KEY", "ITERABLE_CREDENTIALS_BLOCK", "CUSTOMERSDOT_WEBHOOK_SECRETS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RECIPES_SERVE_RECIPES", "customersdot")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 1
    assert "ITERABLE_API_KEY" in result.output and "CUSTOMERSDOT_WEBHOOK_SECRETS" in result.output
    assert "ITERABLE_CREDENTIALS_BLOCK" in result.output  # the block alternative
    assert "MARKETO" not in result.output  # a recipe serve does not run is not checked
    assert not (tmp_path / ".recipes").exists()  # nothing started, not even the local Prefect server


def test_embedded_serve_generates_one_masking_key_kept_across_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from rich.console import Console

    from iterable_recipes.cli.serve import MASKING_KEY_FILE, ensure_masking_key
    from iterable_recipes.masking import email_tag, set_tag_key

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECIPES_MASKING_KEY", "")  # unset (empty counts as unset), restored afterwards
    console = Console(record=True)
    ensure_masking_key(tmp_path / ".recipes", console)
    path = tmp_path / ".recipes" / MASKING_KEY_FILE
    key = path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600 and len(key) >= 16
    assert os.environ["RECIPES_MASKING_KEY"] == key  # what the flow runs inherit
    tag = email_tag("dana@example.com")
    assert tag is not None and key not in console.export_text()

    # The next start reads the same key: tags stay the same across restarts.
    monkeypatch.setenv("RECIPES_MASKING_KEY", "")
    set_tag_key(None)
    ensure_masking_key(tmp_path / ".recipes", console)
    assert os.environ["RECIPES_MASKING_KEY"] == key and email_tag("dana@example.com") == tag

    # A configured key wins: nothing is generated.
    monkeypatch.setenv("RECIPES_MASKING_KEY", "a-configured-masking-key-0123456789")
    ensure_masking_key(tmp_path / "elsewhere", console)
    assert not (tmp_path / "elsewhere").exists()


def test_the_embedded_defaults_follow_the_settings_env_file_included(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from iterable_recipes.cli.serve import local_parts
    from iterable_recipes.settings import load_settings

    monkeypatch.chdir(tmp_path)
    for name in ("RECIPES_DATABASE_URL", "LIMITER_BACKEND", "LIMITER_SQLITE_PATH"):
        monkeypatch.delenv(name, raising=False)
    assert local_parts(load_settings()).app_database and local_parts(load_settings()).limiter
    (tmp_path / ".env").write_text(
        "RECIPES_DATABASE_URL=postgresql+psycopg://db.internal/recipes\nLIMITER_BACKEND=redis\n"
    )
    parts = local_parts(load_settings())
    assert not parts.app_database and not parts.limiter


def test_serve_runs_only_the_deployments_of_the_recipes_it_is_set_to(monkeypatch: pytest.MonkeyPatch) -> None:
    from iterable_recipes.settings import load_settings

    monkeypatch.setenv("RECIPES_SERVE_RECIPES", "optouts, SYNC")
    assert load_settings().recipes_serve_recipes == ["optouts", "sync"]
    recipes = {spec.name: spec.recipe for spec in read_deployments()}
    assert recipes["customersdot-drain"] == "customersdot"
    assert recipes["marketo-opt-out-drain"] == recipes["marketo-unsubscribe-poll"] == "optouts"
    assert recipes["consent-reconciliation"] == "optouts"
    assert all(r for r in recipes.values()), recipes
    monkeypatch.setenv("RECIPES_SERVE_RECIPES", "optouts,newsletters")
    with pytest.raises(Exception, match="RECIPES_SERVE_RECIPES"):
        load_settings()


def test_interrupting_serve_ends_it_and_the_run_it_had_in_flight(
    served_api_url, prefect_client, app_database, tmp_path
):
    """Ctrl-C while a run is in flight (here a poll whose Marketo never answers, retrying): serve ends,
    and so does the run, shown ended on the server rather than Running."""
    serve = start_serve(served_api_url, tmp_path, query_seconds=1)
    try:
        wait_registered(prefect_client, serve)
        poll = prefect_client.read_deployment_by_name(POLL)
        run = prefect_client.create_flow_run_from_deployment(poll.id)
        deadline = time.monotonic() + 300  # generous, never asserted: two busy cores
        while prefect_client.read_flow_run(run.id).state_type.value != "RUNNING":
            assert time.monotonic() < deadline, "the poll run never started"
            assert serve.poll() is None, "recipes serve exited; see serve.log"
            time.sleep(0.5)
        stop_serve(serve)
        state = prefect_client.read_flow_run(run.id).state
        assert state is not None and state.is_final(), state
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
