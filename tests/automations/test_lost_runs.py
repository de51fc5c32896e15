"""The lost-run automations crash a run whose process died, on a real Prefect server's triggers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from dev.processes import wait_for
from iterable_recipes.cli.setup import AUTOMATIONS_DIR, load_automations, upsert_automation

# Prefect's shortest window for a proactive trigger; the server evaluates them every few seconds.
WINDOW_SECONDS = 10
WAIT_SECONDS = 90


@pytest.fixture
def lost_run_automations(prefect_server: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The automations without notifications, the lost-runs one with the shortest window, then deleted: a
    window this short on the server every test of this worker shares would crash their live runs."""
    from prefect.client.orchestration import get_client

    monkeypatch.setenv("RECIPES_LOST_RUN_SECONDS", str(WINDOW_SECONDS))
    loaded, _ = load_automations(AUTOMATIONS_DIR, None)
    with get_client(sync_client=True) as client:
        for automation in loaded:
            upsert_automation(client, automation)
        try:
            yield client
        finally:
            for automation in loaded:
                for found in client.read_automations_by_name(automation.name):
                    client.delete_automation(found.id)


def _beat(run_id: Any) -> None:
    """One heartbeat of ``run_id``, as its flow-run process sends it."""
    from prefect.events import emit_event

    resource = {"prefect.resource.id": f"prefect.flow-run.{run_id}"}
    emit_event(event="prefect.flow-run.heartbeat", resource=resource)


def test_a_run_whose_process_died_before_its_first_heartbeat_is_crashed_and_a_beating_one_is_not(
    lost_run_automations: Any,
):
    # A worker killed seconds after its run went Running: the run's first heartbeat was still queued
    # in the dead process, so no heartbeat ever reached the server. Beside it a live run beats.
    from prefect import flow
    from prefect.states import Pending, Running

    client = lost_run_automations
    runs = {}
    for name in ("killed-early", "alive"):
        runs[name] = client.create_flow_run(flow=flow(name=name)(lambda: None), state=Pending()).id
        client.set_flow_run_state(runs[name], Running(), force=True)

    def silent_run_ended() -> bool:
        _beat(runs["alive"])
        return bool(client.read_flow_run(runs["killed-early"]).state.is_final())

    with contextlib.suppress(TimeoutError):  # the assertions below say what the state was
        wait_for("the run without a heartbeat to end", silent_run_ended, timeout=WAIT_SECONDS, every=2)

    lost = client.read_flow_run(runs["killed-early"]).state
    assert lost.name == "Crashed", f"a run without a heartbeat stayed {lost.name} for {WAIT_SECONDS} s"
    assert lost.message.startswith(f"No heartbeat for {WINDOW_SECONDS} s"), lost.message
    assert client.read_flow_run(runs["alive"]).state.name == "Running"
