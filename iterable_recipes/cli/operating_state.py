"""What operators set in Prefect, kept when `recipes serve` registers prefect.yaml's deployments again:
a deployment's paused flag and each schedule's active flag.

Prefect 3's ``RunnerDeployment.apply`` sends ``paused=False`` when it is given no paused flag, and every
schedule with the active flag it was built with, so without this a restart of `serve` switched a paused
deployment or schedule back on. Before serving, the deployment is read from the server and its flags are
passed on; a schedule keeps its flag while its prefect.yaml definition is the one on the server.

Which definition was applied last is read from the server alone, not from a file of this machine's: a
schedule is identified by the ``slug`` prefect.yaml gives it, and the definition on the server under that
slug (cron or interval, timezone, ...) is the one applied last. A file in the state folder would be
missing when `serve` moves to another machine or .recipes/ is lost. A hash of the definition as the slug
would change the schedule's identity at each edit, and `prefect deploy --all` of the same file would then
be refused by the server (a file without slugs over schedules with slugs: 422) or, the file having
slugs of its own, add its schedules beside serve's (the server updates by slug and deletes none). The price:
a definition edited in the UI, not in prefect.yaml, differs from the file too, and is rewritten to the
file's (prefect.yaml is the one definition), its active flag with it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OnServer:
    """A deployment as the server holds it: its id, paused flag and schedules (``DeploymentSchedule``)."""

    id: Any
    paused: bool
    schedules: tuple[Any, ...]


def read_on_server(client: Any, name: str) -> OnServer | None:
    """The "flow/deployment" ``name`` on the server (a sync Prefect client), or None when it is new."""
    from prefect.exceptions import ObjectNotFound

    try:
        deployment = client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None
    return OnServer(id=deployment.id, paused=bool(deployment.paused), schedules=tuple(deployment.schedules))


def definition(schedule: Any, anchored: bool) -> dict[str, Any]:
    """A schedule's definition (a ``CronSchedule``, ``IntervalSchedule`` or ``RRuleSchedule``) to compare.

    Without an anchor date in prefect.yaml an interval is anchored at the moment it is built, so the
    anchor is left out of the comparison unless the file gives one (``anchored``).
    """
    return {
        "type": type(schedule).__name__,
        **schedule.model_dump(mode="json", exclude=set() if anchored else {"anchor_date"}),
    }


def kept_active(on_server: OnServer | None, slug: str, built: Any, anchored: bool) -> bool | None:
    """The server's active flag of the schedule ``slug`` when its definition there is ``built``'s; None
    when the schedule is new or its definition changed (then prefect.yaml's flag applies)."""
    wanted = definition(built, anchored)
    for existing in on_server.schedules if on_server else ():
        # A schedule registered before schedules had slugs (slug None) is matched by its definition.
        if existing.slug in (slug, None) and definition(existing.schedule, anchored) == wanted:
            return bool(existing.active)
    return None


def keep_active_flags(
    schedules: list[Any], entries: tuple[dict[str, Any], ...], on_server: OnServer | None
) -> None:
    """Give each built schedule (``DeploymentScheduleCreate``) the server's active flag where it is kept."""
    for schedule, entry in zip(schedules, entries, strict=True):
        kept = kept_active(on_server, entry["slug"], schedule.schedule, "anchor_date" in entry)
        if kept is not None:
            schedule.active = kept


def stale_schedules(on_server: OnServer | None, slugs: set[str]) -> list[Any]:
    """The server's schedules whose slug prefect.yaml no longer has.

    The server updates schedules by slug when both sides have slugs and leaves the others alone, so a
    schedule removed from prefect.yaml (or given a new slug) would otherwise keep running.
    """
    schedules = on_server.schedules if on_server else ()
    return [s for s in schedules if s.slug is not None and s.slug not in slugs]


def drop_stale_schedules(client: Any, on_server: OnServer | None, slugs: set[str]) -> None:
    """Delete the deployment's schedules whose slug prefect.yaml no longer has (a sync Prefect client)."""
    from prefect.exceptions import ObjectNotFound

    for schedule in stale_schedules(on_server, slugs):
        assert on_server is not None  # stale_schedules finds none without it
        with contextlib.suppress(ObjectNotFound):  # deleted meanwhile: what was wanted
            client.delete_deployment_schedule(on_server.id, schedule.id)
