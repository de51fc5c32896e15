"""Run reports every flow ends with: a counts artifact, progress while it works, and Prefect events."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.events import emit_event
from prefect.runtime import flow_run

from iterable_recipes.not_sent import table_rows
from iterable_recipes.sentences import duration


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


def publish_not_sent(name: str, rows: Sequence[Mapping[str, str]], total: int, description: str) -> bool:
    """The run's per-record table of what did not go through (masked rows, capped, the rest counted in
    a last row); nothing when every record went through. Returns whether it published."""
    if not total:
        return False
    publish_table(name, table_rows(rows, total), description)
    return True


def publish_markdown(name: str, markdown: str, description: str) -> None:
    """A markdown artifact keyed by ``name``; its text must be masked already."""
    create_markdown_artifact(markdown=markdown, key=_key(name), description=description)


def emit_alert(recipe: str, event: str, payload: Mapping[str, object]) -> None:
    """An outcome operators may want an automation for (dead items, rejected rows); no personal data."""
    emit_event(
        event=f"recipes.{event}",
        resource={"prefect.resource.id": f"recipes.recipe.{recipe}", "recipes.recipe": recipe},
        payload=dict(payload),
    )


def found_work(counts: Mapping[str, int | float | str]) -> bool:
    """Whether a run's counts show it found anything (a number not zero, or a text)."""
    return any(value for value in counts.values())


def publish_found(recipe: str, counts: Mapping[str, int | float | str], description: str = "") -> bool:
    """``publish_counts``, unless the run found nothing: a drain started by a backstop mostly finds an
    empty inbox, and an all-zero artifact per such run would bury the runs that did work. Returns
    whether anything was published."""
    if not found_work(counts):
        return False
    publish_counts(recipe, counts, description)
    return True


PROGRESS_SECONDS = 5.0


@dataclass(frozen=True)
class ProgressView:
    """What a person watching a run is shown: done of total, the rate so far, and the time left."""

    done: int
    total: int
    elapsed_seconds: float

    @property
    def percent(self) -> float:
        """Done of total, in whole percents (100 when there is nothing, or nothing more, to do)."""
        return 100.0 if self.total <= 0 else min(100.0, float(round(100.0 * self.done / self.total)))

    @property
    def rate(self) -> float:
        """Done per second since the run started sending."""
        return self.done / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def seconds_left(self) -> float | None:
        """The time left at the rate so far; None before anything is done."""
        left = max(0, self.total - self.done)
        if not left:
            return 0.0
        return left / self.rate if self.rate > 0 else None


def progress_markdown(title: str, unit: str, view: ProgressView, every: float = PROGRESS_SECONDS) -> str:
    """The markdown beside the progress artifact: counts, rate and time left (numbers only)."""
    return (
        f"**{title}**\n\n"
        f"| {unit} done | {unit} to do | rate | time left | elapsed |\n"
        "| ---: | ---: | ---: | ---: | ---: |\n"
        f"| {view.done:,} | {view.total:,} ({view.percent:.0f} %) | {view.rate:,.1f} {unit}/s "
        f"| {duration(view.seconds_left)} | {duration(view.elapsed_seconds)} |\n\n"
        f"Updated every {every:g} s while the run works."
    )


class ProgressSink(Protocol):
    """Where progress goes: Prefect's artifacts by default, a recorder in tests."""

    def create(self, percent: float, markdown: str) -> None: ...

    def update(self, percent: float, markdown: str) -> None: ...


class PrefectProgress:
    """A progress artifact (the percentage) and a keyed markdown artifact beside it, updated in place."""

    def __init__(self, description: str, key: str) -> None:
        self.description = description
        self.key = key
        self._ids: tuple[UUID, UUID] | None = None

    def create(self, percent: float, markdown: str) -> None:
        """Create both, linked to the current flow run (called in its context)."""
        progress = create_progress_artifact(progress=percent, description=self.description)
        text = create_markdown_artifact(markdown=markdown, key=self.key, description=self.description)
        self._ids = (UUID(str(progress)), UUID(str(text)))  # both typed as maybe-coroutines; sync here

    def update(self, percent: float, markdown: str) -> None:
        """Update both in place: a new version per update would make hundreds for one long run."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import ArtifactUpdate

        assert self._ids is not None
        update_progress_artifact(artifact_id=self._ids[0], progress=percent)
        with get_client(sync_client=True) as client:
            client.update_artifact(artifact_id=self._ids[1], artifact=ArtifactUpdate(data=markdown))


class Progress:
    """What a long run shows while it works: done of total, the rate and the time left, in a progress
    artifact and a markdown artifact beside it; counts only, nothing personal.

    ``update`` may be called as often as work moves (each batch settled, each answer back); it
    publishes when ``interval_seconds`` have passed since the last publication, and always the first
    time and when all is done. A run with nothing to do publishes nothing. Time comes from ``clock``
    (monotonic seconds), so tests move it by hand.
    """

    def __init__(
        self,
        description: str,
        key: str,
        unit: str = "rows",
        interval_seconds: float = PROGRESS_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        sink: ProgressSink | None = None,
    ) -> None:
        self.description = description
        self.unit = unit
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.sink: ProgressSink = sink or PrefectProgress(description, _key(key))
        self.started = clock()
        self.published: list[ProgressView] = []
        self._last_at = -math.inf
        self._lock = threading.Lock()

    def due(self) -> bool:
        """Whether the next ``update`` would publish (a caller can skip costly totals otherwise)."""
        return self.clock() - self._last_at >= self.interval_seconds

    def update(self, done: int, total: int, *, final: bool = False) -> bool:
        """Show ``done`` of ``total`` when due (see the class), or at once when ``final`` (the run's
        last word); returns whether it published.

        Each publication is a request or two that holds up the caller, hence at most one per interval.
        """
        with self._lock:
            if total <= 0 and not self.published:
                return False
            now = self.clock()
            finished = final or done >= total
            if (
                finished
                and self.published
                and (self.published[-1].done, self.published[-1].total) == (done, total)
            ):
                return False  # the end was shown already
            if not (finished or now - self._last_at >= self.interval_seconds):
                return False
            view = ProgressView(done, total, now - self.started)
            markdown = progress_markdown(self.description, self.unit, view, self.interval_seconds)
            if not self.published:
                self.sink.create(view.percent, markdown)
            else:
                self.sink.update(view.percent, markdown)
            self.published.append(view)
            self._last_at = now
            return True
