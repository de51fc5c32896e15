"""The due-work watcher: a drain run is created when the inbox holds work that is due and no run will take it.

The nudge makes a run as an item is committed, but a nudge can be lost (Prefect was down, the receiver
restarted between commit and call), and an item put back for later (a retry's backoff, a held event, a
lease of a killed drain, a consent re-check) is nudged by nobody when its time comes. Every
``interval_seconds`` the watcher asks the app database, with one indexed EXISTS per source, whether a
drain would find work now; only then does it ask Prefect whether a run of that drain is already under
way (Running, Pending, or Scheduled to start by now), and only when none is does it create one, through
the nudge's own trigger. So a quiet inbox costs no flow run at all, and a lost nudge is drained within
one interval. Replicas watching the same inbox share a run: its idempotency key names the interval.

A drain that keeps failing (a refused key) must not be restarted every interval: after a run the
watcher made ended Failed or Crashed, it waits twice as long each time, up to ``backoff_cap_seconds``.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from iterable_recipes.receiver.nudge import Clock, FlowRunTrigger, SystemClock

log = logging.getLogger(__name__)
FAILED_STATES = frozenset({"FAILED", "CRASHED"})


class ActiveRunReader(Protocol):
    """What the watcher needs beyond creating runs: whether a run of a deployment is under way."""

    def active_run(self, deployment: str) -> bool: ...


@dataclass(frozen=True)
class Watched:
    """A drain deployment and the cheap question whether its source has work due now."""

    deployment: str
    due: Callable[[], bool]


@dataclass
class WatchStats:
    """Counters for operators and tests: passes made, runs created, and why the others created none."""

    passes: int = 0
    created: int = 0
    active: int = 0
    backing_off: int = 0
    failed: int = 0
    runs: dict[str, list[str]] = field(default_factory=dict)


class DueWorkWatcher:
    """Every ``interval_seconds``: for each watched drain with work due and no run under way, one run."""

    def __init__(
        self,
        trigger: FlowRunTrigger,
        watched: Sequence[Watched],
        interval_seconds: float = 30.0,
        *,
        backoff_cap_seconds: float = 900.0,
        clock: Clock | None = None,
    ) -> None:
        self.trigger = trigger
        self.watched = list(watched)
        self.interval_seconds = interval_seconds
        self.backoff_cap_seconds = backoff_cap_seconds
        self.clock: Clock = clock or SystemClock()
        self.stats = WatchStats()
        # Per deployment: the last run this watcher created and when (monotonic); failures in a row.
        self._last: dict[str, tuple[str, float]] = {}
        self._failures: dict[str, int] = {}
        self._counted: set[str] = set()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> DueWorkWatcher:
        """Start the watching thread (idempotent), in a copy of the caller's context (Prefect settings)."""
        with self._wake:
            if self._thread is not None or not self.watched:
                return self
            self._stopping = False
            context = contextvars.copy_context()
            self._thread = threading.Thread(
                target=context.run, args=(self._run,), name="watcher", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread; a pass under way finishes first."""
        with self._wake:
            if self._thread is None:
                return
            self._stopping = True
            self._wake.notify_all()
            thread, self._thread = self._thread, None
        thread.join(timeout)

    def _run(self) -> None:
        # The first pass waits one interval: at start the nudges of the last commits are still on
        # their way, and a receiver restarting in a loop must not add a run per start.
        next_at = self.clock.monotonic() + self.interval_seconds
        while True:
            with self._wake:
                while not self._stopping and self.clock.monotonic() < next_at:
                    self.clock.wait_until(self._wake, next_at)
                if self._stopping:
                    return
            self.check()
            next_at = self.clock.monotonic() + self.interval_seconds

    def check(self) -> list[str]:
        """One pass over the watched drains; returns the ids of the runs it created."""
        self.stats.passes += 1
        created = []
        for watched in self.watched:
            run_id = self._check_one(watched)
            if run_id is not None:
                created.append(run_id)
        return created

    def _check_one(self, watched: Watched) -> str | None:
        """A run of ``watched`` when work is due, none is under way and no failure backoff holds."""
        try:
            if not watched.due():
                return None
        except Exception as exc:
            # Class name only: a driver's message can carry the database URL.
            log.warning("asking the inbox for due work failed (%s)", type(exc).__name__)
            return None
        try:
            if self._backing_off(watched.deployment):
                self.stats.backing_off += 1
                return None
            if self._under_way(watched.deployment):
                self.stats.active += 1
                return None
            return self._create(watched.deployment)
        except Exception as exc:
            self.stats.failed += 1
            log.warning(
                "the watcher could not start a run of %s (%s); it tries again in %.0f s",
                watched.deployment,
                type(exc).__name__,
                self.interval_seconds,
            )
            return None

    def _under_way(self, deployment: str) -> bool:
        """Whether a run of ``deployment`` that will claim the due work exists (Prefect says so)."""
        active = getattr(self.trigger, "active_run", None)
        return bool(active(deployment)) if active is not None else False

    def _backing_off(self, deployment: str) -> bool:
        """True while the last run this watcher made ended Failed or Crashed, within its backoff."""
        last = self._last.get(deployment)
        read = getattr(self.trigger, "run_state", None)
        if last is None or read is None:
            return False
        run_id, created_at = last
        if run_id not in self._counted:
            state = read(run_id)
            if state in FAILED_STATES:
                self._failures[deployment] = self._failures.get(deployment, 0) + 1
                self._counted.add(run_id)
            elif state is not None and state not in ("SCHEDULED", "PENDING", "RUNNING"):
                self._failures[deployment] = 0
                self._counted.add(run_id)
        failures = self._failures.get(deployment, 0)
        if not failures:
            return False
        wait = min(self.backoff_cap_seconds, self.interval_seconds * 2**failures)
        return self.clock.monotonic() < created_at + wait

    def _create(self, deployment: str) -> str:
        """Create the run under a key naming this interval, so replicas' passes in it share one run."""
        key = f"{deployment}:due:{int(self.clock.time() // self.interval_seconds)}"
        run_id = self.trigger.create_run(deployment, key)
        self.stats.created += 1
        self.stats.runs.setdefault(deployment, []).append(run_id)
        self._last[deployment] = (run_id, self.clock.monotonic())
        log.info("work is due for %s and no run was under way: created flow run %s", deployment, run_id)
        return run_id
