"""Read prefect.yaml, the one list of deployments, and build served deployments from it."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from iterable_recipes.cli.operating_state import OnServer, keep_active_flags
from iterable_recipes.project import project_file

PREFECT_FILE = project_file("prefect.yaml")
# Which recipe each flow module serves: `recipes serve` runs only the recipes RECIPES_SERVE_RECIPES names.
RECIPE_OF_MODULE = {
    "flows.customersdot_events": "customersdot",
    "flows.marketo_unsubscribes": "optouts",
    "flows.consent_reconciliation": "optouts",
    "flows.snowflake_sync": "sync",
}


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment of prefect.yaml, reduced to what ``flow.to_deployment`` takes."""

    name: str
    entrypoint: str
    description: str | None = None
    tags: tuple[str, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    schedules: tuple[dict[str, Any], ...] = ()
    concurrency_limit: int | None = None
    collision_strategy: str | None = None
    paused: bool = False

    @property
    def slugs(self) -> set[str]:
        """The slugs of the deployment's schedules (serve and `prefect deploy` find them by these)."""
        return {str(s["slug"]) for s in self.schedules if s.get("slug")}

    @property
    def recipe(self) -> str:
        """The recipe the deployment belongs to (RECIPES_SERVE_RECIPES names it), by its flow module."""
        return RECIPE_OF_MODULE.get(self.module, "")

    @property
    def function(self) -> str:
        """The flow function's name in its module."""
        return self.entrypoint.split(":", 1)[1]

    @property
    def module(self) -> str:
        """The dotted module name of the entrypoint (flows/x.py -> flows.x)."""
        return self.entrypoint.split(":", 1)[0].removesuffix(".py").replace("/", ".")


def _limit(value: Any) -> tuple[int | None, str | None]:
    """prefect.yaml allows an int or ``{limit, collision_strategy}``."""
    if value is None:
        return None, None
    if isinstance(value, int):
        return value, None
    return int(value["limit"]), value.get("collision_strategy")


def read_deployments(path: Path = PREFECT_FILE) -> list[DeploymentSpec]:
    """Every deployment declared in ``path``, in file order."""
    document = yaml.safe_load(path.read_text()) or {}
    specs = []
    for entry in document.get("deployments") or []:
        limit, strategy = _limit(entry.get("concurrency_limit"))
        specs.append(
            DeploymentSpec(
                name=entry["name"],
                entrypoint=entry["entrypoint"],
                description=entry.get("description"),
                tags=tuple(entry.get("tags") or ()),
                parameters=dict(entry.get("parameters") or {}),
                schedules=tuple(dict(s) for s in entry.get("schedules") or ()),
                concurrency_limit=limit,
                collision_strategy=strategy,
                paused=bool(entry.get("paused", False)),
            )
        )
    return specs


def load_flow(spec: DeploymentSpec) -> Any:
    """Import the entrypoint's module by its dotted name (so runs import the same module) and return
    its flow."""
    module = importlib.import_module(spec.module)
    return getattr(module, spec.function)


def full_name(spec: DeploymentSpec) -> str:
    """ "flow-name/deployment-name", as the Prefect API names the deployment."""
    return f"{load_flow(spec).name}/{spec.name}"


def available(spec: DeploymentSpec) -> bool:
    """Whether the entrypoint's module exists in this checkout (a sync flow may not be merged yet)."""
    return importlib.util.find_spec(spec.module) is not None


def _schedule(spec: DeploymentSpec, entry: dict[str, Any], active: bool) -> Any:
    """One prefect.yaml schedule as a Prefect ``Schedule``, switched on when ``active`` and the file's
    ``active`` (default true) say so."""
    from prefect.schedules import Cron, Interval

    slug = entry.get("slug")
    if not slug:
        # Serve keeps a schedule's active flag by its slug, and `prefect deploy` of a file without slugs
        # fails on a server whose schedules have them: every schedule names one.
        raise ValueError(f"deployment {spec.name}: every schedule needs a slug")
    options: dict[str, Any] = {
        "timezone": entry.get("timezone", "UTC"),
        "active": active and entry.get("active", True),
        "slug": str(slug),
    }
    if "cron" in entry:
        return Cron(entry["cron"], day_or=entry.get("day_or", True), **options)
    if "interval" in entry:
        return Interval(entry["interval"], anchor_date=entry.get("anchor_date"), **options)
    raise ValueError(f"deployment {spec.name}: only cron and interval schedules are served")


def to_runner_deployment(
    spec: DeploymentSpec, schedules_active: bool = True, on_server: OnServer | None = None
) -> Any:
    """``flow.to_deployment(...)`` with the spec's schedules, parameters and concurrency limit.

    ``schedules_active=False`` registers the schedules switched off (the demo starts every run itself).
    ``on_server`` is the deployment as the server holds it: its paused flag is kept, and so is each
    schedule's active flag while the schedule's definition is unchanged (see ``operating_state``); a new
    deployment takes prefect.yaml's flags.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    schedules = [_schedule(spec, entry, schedules_active) for entry in spec.schedules]
    limit: Any = spec.concurrency_limit
    if limit is not None and spec.collision_strategy:
        limit = ConcurrencyLimitConfig(
            limit=limit, collision_strategy=ConcurrencyLimitStrategy(spec.collision_strategy)
        )
    flow = load_flow(spec)
    deployment = flow.to_deployment(
        name=spec.name,
        description=spec.description,
        tags=list(spec.tags),
        parameters=spec.parameters,
        schedules=schedules,
        concurrency_limit=limit,
        # Always explicit: apply sends paused=False when it is given none.
        paused=on_server.paused if on_server else spec.paused,
    )
    if schedules_active:
        keep_active_flags(deployment.schedules or [], spec.schedules, on_server)
    return deployment
