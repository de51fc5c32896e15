"""Run reports every flow ends with: a counts artifact, a progress artifact, and Prefect events."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from uuid import UUID

from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run


def _key(name: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def publish_counts(recipe: str, counts: Mapping[str, int | float | str], description: str = "") -> None:
    """End a run with a table artifact of its counts and a ``recipes.run.completed`` event."""
    rows = [{"count": name, "value": value} for name, value in counts.items()]
    create_table_artifact(table=rows, key=_key(f"{recipe}-counts"), description=description or recipe)
    emit_event(
        event="recipes.run.completed",
        resource={"prefect.resource.id": f"recipes.recipe.{recipe}", "recipes.recipe": recipe},
        payload={"counts": dict(counts), "flow_run_id": str(flow_run.id or "")},
    )


def publish_table(name: str, rows: Sequence[Mapping[str, object]], description: str) -> None:
    """A table artifact keyed by ``name``; its rows must be masked already (anyone with the UI reads it)."""
    create_table_artifact(table=[dict(row) for row in rows], key=_key(name), description=description)


def emit_alert(recipe: str, event: str, payload: Mapping[str, object]) -> None:
    """An outcome operators may want an automation for (dead items, rejected rows); no personal data."""
    emit_event(
        event=f"recipes.{event}",
        resource={"prefect.resource.id": f"recipes.recipe.{recipe}", "recipes.recipe": recipe},
        payload=dict(payload),
    )


class Progress:
    """A progress artifact shown while a long run works; percentages only, nothing personal."""

    def __init__(self, description: str, min_interval_seconds: float = 1.0) -> None:
        self._id: UUID | None = None
        self._description = description
        self._last = -1.0
        self._min_interval = min_interval_seconds
        self._last_at = -math.inf

    def update(self, done: int, total: int) -> None:
        """Show ``done`` of ``total`` (at whole-percent steps, at most once per ``min_interval_seconds``
        but always at 100 %, to spare the API: each update is a request that holds up the run)."""
        percent = 100.0 if total <= 0 else min(100.0, round(100.0 * done / total, 0))
        now = time.monotonic()
        if percent == self._last or (percent < 100.0 and now - self._last_at < self._min_interval):
            return
        self._last, self._last_at = percent, now
        if self._id is None:
            self._id = create_progress_artifact(progress=percent, description=self._description)  # type: ignore[assignment]
        else:
            update_progress_artifact(artifact_id=self._id, progress=percent)
