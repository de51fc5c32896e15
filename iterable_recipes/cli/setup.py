"""`recipes setup`: create, idempotently, what a new installation needs on its Prefect server."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console

from iterable_recipes.project import project_file

AUTOMATIONS_DIR = project_file("automations")
# ${NAME:-default} in an automation file: the environment variable NAME when set, else the default.
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}")


def expand_placeholders(text: str, environ: dict[str, str] | None = None) -> str:
    """``text`` with each ``${NAME:-default}`` replaced (e.g. RECIPES_LOST_RUN_SECONDS in lost-runs)."""
    env = os.environ if environ is None else environ
    return _PLACEHOLDER.sub(lambda m: env.get(m.group(1)) or m.group(2), text)


def register_blocks() -> list[str]:
    """Register our block types and prefect-snowflake's credentials (`prefect block register -m blocks`)."""
    from prefect_snowflake import SnowflakeCredentials

    import blocks

    classes = [getattr(blocks, name) for name in blocks.__all__] + [SnowflakeCredentials]
    for cls in classes:
        cls.register_type_and_schema()
    return [cls.get_block_type_slug() for cls in classes]


def ensure_work_pool(client: Any, name: str) -> bool:
    """Create the process work pool ``name``; False when it already existed."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    try:
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))
    except ObjectAlreadyExists:
        return False
    return True


def load_automations(directory: Path, alert_block_id: Any | None) -> tuple[list[Any], list[str]]:
    """The automations of ``directory``; those needing a notification block are skipped without one."""
    from prefect.events.schemas.automations import AutomationCore

    loaded, skipped = [], []
    for path in sorted(directory.glob("*.yaml")):
        document = yaml.safe_load(expand_placeholders(path.read_text()))
        notifies = [a for a in document["actions"] if a["type"] == "send-notification"]
        if notifies and alert_block_id is None:
            skipped.append(document["name"])
            continue
        for action in notifies:
            action.setdefault("block_document_id", str(alert_block_id))
        loaded.append(AutomationCore.model_validate(document))
    return loaded, skipped


def upsert_automation(client: Any, automation: Any) -> str:
    """Create the automation, or update the one of the same name; returns "created" or "updated"."""
    existing = client.read_automations_by_name(automation.name)
    if existing:
        client.update_automation(existing[0].id, automation)
        return "updated"
    client.create_automation(automation)
    return "created"


def alert_block_id(name: str | None) -> Any | None:
    """The document id of the notification block "type-slug/name", or None when not set."""
    if not name:
        return None
    from prefect.blocks.core import Block

    block: Any = Block.load(name)
    return block._block_document_id


def setup() -> None:
    """Register block types, create the work pool and the automations of automations/ (idempotent)."""
    from prefect.client.orchestration import get_client

    from iterable_recipes.settings import load_settings

    console = Console()
    settings = load_settings()
    console.print(f"block types registered: {', '.join(register_blocks())}")
    with get_client(sync_client=True) as client:
        created = ensure_work_pool(client, settings.recipes_work_pool)
        console.print(
            f"work pool {settings.recipes_work_pool} (process): {'created' if created else 'exists'}"
        )
        console.print(
            "concurrency limits: none global; the poll's and syncs' limits come with their deployments"
        )
        block_id = alert_block_id(settings.recipes_alert_block)
        automations, skipped = load_automations(AUTOMATIONS_DIR, block_id)
        for automation in automations:
            console.print(f"automation {automation.name}: {upsert_automation(client, automation)}")
    if skipped:
        console.print(
            f"[yellow]skipped[/] {', '.join(skipped)}: set RECIPES_ALERT_BLOCK to a notification block "
            "(e.g. slack-webhook/ops-alerts) and run `recipes setup` again"
        )


def register(app: typer.Typer) -> None:
    """Add `recipes setup` to ``app``."""
    app.command("setup")(setup)
