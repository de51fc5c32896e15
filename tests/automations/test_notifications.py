"""Every notification names its cause and links the run: rendered as Prefect's server renders them."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from iterable_recipes.cli.setup import AUTOMATIONS_DIR, expand_placeholders

UI = "http://prefect.example:4200"
CAUSE = (
    "Flow run encountered an exception: RuntimeError: 2 batch(es) of contacts were not accepted; "
    "first: users/bulkUpdate 401 BadApiKey: Invalid API key"
)


def _bodies() -> list[tuple[str, str]]:
    """(file name, body) of every send-notification action of automations/."""
    found = []
    for path in sorted(Path(AUTOMATIONS_DIR).glob("*.yaml")):
        document = yaml.safe_load(expand_placeholders(path.read_text()))
        found += [(path.name, a["body"]) for a in document["actions"] if a["type"] == "send-notification"]
    return found


def _render(template: str, context: dict[str, Any]) -> str:
    """``template`` rendered by Prefect's own user-template environment and filters (ui_url ...)."""
    from prefect.server.events.jinja_filters import all_filters
    from prefect.server.utilities.user_templates import register_user_template_filters, render_user_template
    from prefect.settings import PREFECT_UI_URL, temporary_settings

    register_user_template_filters(all_filters)
    with temporary_settings({PREFECT_UI_URL: UI}):
        return asyncio.run(render_user_template(template, context))


def _context() -> dict[str, Any]:
    """What an automation's template sees for a failed run of a deployment, and a recipe's event."""
    from prefect.server.schemas.core import FlowRun
    from prefect.server.schemas.states import State, StateType

    run = FlowRun(
        id=uuid.uuid4(),
        flow_id=uuid.uuid4(),
        name="small-nautilus",
        state=State(type=StateType.FAILED, name="Failed", message=CAUSE),
    )
    payload = {"dead": 2, "item_id": 7, "reason": "max attempts", "unresolved": 1, "sync": "contacts"}
    payload |= {"rejected": 3, "null_identities": 1, "duplicate_rows": 2, "duplicate_identities": 1}
    event = SimpleNamespace(
        resource={"recipes.recipe": "customersdot", "recipes.source": "customersdot"}, payload=payload
    )
    return {"flow_run": run, "deployment": SimpleNamespace(name="customersdot-drain"), "event": event}


def test_every_notification_links_the_run():
    bodies = _bodies()
    assert len(bodies) >= 6
    context = _context()
    for name, body in bodies:
        assert "flow_run|ui_url" in body.replace(" ", ""), name
        rendered = _render(body, context)
        assert f"{UI}/runs/flow-run/{context['flow_run'].id}" in rendered, (name, rendered)


def test_a_failed_runs_notification_carries_its_state_message():
    (body,) = [body for file, body in _bodies() if file == "flow-run-failed.yaml"]
    assert "flow_run.state.message" in body
    rendered = _render(body, _context())
    assert "users/bulkUpdate 401 BadApiKey: Invalid API key" in rendered, rendered
    assert "customersdot-drain run small-nautilus ended Failed" in rendered


def test_a_notification_about_an_event_outside_a_run_renders_without_a_link():
    context = _context() | {"flow_run": None}
    for name, body in _bodies():
        if name != "flow-run-failed.yaml":
            assert "Run:" not in _render(body, context), name
