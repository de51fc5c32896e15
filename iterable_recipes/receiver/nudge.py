"""Mark a drain deployment as due: nudges collapse in process, one Prefect call per deployment per window.

Request handlers call ``Nudger.nudge(name)``, which only sets a flag. A background thread creates one
flow run per due deployment and window, with an idempotency key naming the window, so a burst of
thousands of requests makes a handful of flow runs, and replicas nudging in the same window share one.
If Prefect is unreachable the failure is logged and dropped: the due-work watcher (``watch.py``) makes
the run once Prefect answers again, and the drain's rare schedule is the last backstop.

A run the nudger created that has not started yet (Scheduled or Pending) will claim every event
committed before it starts, so while there is one, a window only reads its state instead of creating
another: each run costs a Python process, and a queue of them only delays the one that matters. Once
it runs, the next window creates one follow-up run, for the events committed after its last claim.
A run still waiting after ``waiting_cap_seconds`` no longer holds anything back. Each window still
makes at most one call per deployment: when the read shows the run has started, the following window
creates the follow-up.

Time comes from a ``Clock`` (the system's by default), so tests can move windows on by hand instead
of sleeping through them. The Prefect trigger keeps one client (one connection pool, one SSL context)
for its life: building one per call cost more CPU than the call; ``Nudger.stop`` closes it.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

log = logging.getLogger(__name__)


class FlowRunTrigger(Protocol):
    """What the Nudger needs from Prefect; tests and other orchestrators can stand in."""

    def create_run(self, deployment: str, idempotency_key: str) -> str:
        """Create (or find, by idempotency key) a flow run of ``deployment``; return its id."""
        ...

    def healthy(self) -> bool:
        """True when the orchestrator's API answers."""
        ...


class RunStateReader(Protocol):
    """Optional for a trigger: the state type of a run it created ("SCHEDULED", "RUNNING", ...)."""

    def run_state(self, run_id: str) -> str | None: ...


WAITING_STATES = frozenset({"SCHEDULED", "PENDING"})


class Clock(Protocol):
    """The Nudger's time. Windows and the waiting cap are on ``monotonic``, which wall-clock steps
    cannot stretch; idempotency keys are on wall ``time``, the only clock replicas share."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def wait_until(self, condition: threading.Condition, deadline: float | None) -> None:
        """Wait on ``condition`` (held by the caller) until notified or ``monotonic()`` reaches
        ``deadline`` (None: until notified). Called only when nothing is ready to send; it may return
        early, as the caller checks again."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time`` and a timed condition wait."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def wait_until(self, condition: threading.Condition, deadline: float | None) -> None:
        condition.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))


class PrefectTrigger:
    """Creates flow runs by deployment name ("flow-name/deployment-name") through Prefect's API, over one
    client made at first use and kept until ``close`` (the nudger's, the watcher's and /healthz's threads
    share it: its httpx pool is thread-safe)."""

    def __init__(
        self,
        api_url: str | None = None,
        timeout_seconds: float = 5.0,
        *,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        # Import Prefect here, on the caller's thread: two threads importing it at once can deadlock
        # or fail on its circular imports, and importing it lazily keeps ``import webhooks`` light.
        import prefect.client.orchestration  # noqa: F401

        self.api_url = api_url
        self.timeout_seconds = timeout_seconds
        self._deployment_ids: dict[str, UUID] = {}
        self._factory: Callable[[], Any] = client_factory or self._new_client
        self._client: Any = None
        self._client_lock = threading.Lock()

    def _new_client(self) -> Any:
        """A SyncPrefectClient for ``api_url``, or for the Prefect settings in effect when it is None."""
        from prefect.client.orchestration import SyncPrefectClient, get_client

        httpx_settings = {"timeout": self.timeout_seconds}
        if self.api_url is None:
            return get_client(sync_client=True, httpx_settings=httpx_settings)
        return SyncPrefectClient(self.api_url, httpx_settings=httpx_settings)

    def client(self) -> Any:
        """The one open client: made (by the factory) and entered at first use, or after ``close``."""
        with self._client_lock:
            if self._client is None:
                client = self._factory()
                client.__enter__()
                self._client = client
            return self._client

    def close(self) -> None:
        """Close the client, if one is open (idempotent; a later call opens a new one)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.__exit__(None, None, None)

    def create_run(self, deployment: str, idempotency_key: str) -> str:
        """Create the window's flow run; the deployment id is looked up once and remembered."""
        from prefect.exceptions import ObjectNotFound

        client = self.client()
        deployment_id = self._deployment_ids.get(deployment)
        if deployment_id is None:
            deployment_id = client.read_deployment_by_name(deployment).id
            self._deployment_ids[deployment] = deployment_id
        try:
            run = client.create_flow_run_from_deployment(deployment_id, idempotency_key=idempotency_key)
        except ObjectNotFound:
            # The deployment was re-created under the same name: look it up again next time.
            self._deployment_ids.pop(deployment, None)
            raise
        return str(run.id)

    def run_state(self, run_id: str) -> str | None:
        """The run's state type (SCHEDULED covers Late and AwaitingConcurrencySlot); None if it has none."""
        state = self.client().read_flow_run(UUID(run_id)).state
        return None if state is None else str(state.type.value)

    def active_run(self, deployment: str) -> bool:
        """Whether a run of ``deployment`` is Running, Pending, or Scheduled to start by now (a
        schedule's future runs do not count: they will not take work that is due now)."""
        from datetime import UTC, datetime

        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterName,
            FlowRunFilter,
            FlowRunFilterExpectedStartTime,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        flow_name, _, deployment_name = deployment.partition("/")
        states = [StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED]
        runs = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states)),
            expected_start_time=FlowRunFilterExpectedStartTime(before_=datetime.now(UTC)),
        )
        found = self.client().read_flow_runs(
            flow_run_filter=runs,
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name])),
            flow_filter=_flow_named(flow_name),
            limit=1,
        )
        return bool(found)

    def healthy(self) -> bool:
        """True when Prefect's API answers its health check."""
        try:
            return self.client().api_healthcheck() is None
        except Exception:
            return False


def _flow_named(name: str) -> Any:
    """A Prefect flow filter by name (deployment names are unique per flow only)."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    return FlowFilter(name=FlowFilterName(any_=[name]))


@dataclass
class NudgeStats:
    """Counters for operators and tests: nudges asked for, runs created (``sent``), failed calls, state
    reads, and windows that created nothing because the last run had not started (``waited``)."""

    requested: int = 0
    sent: int = 0
    failed: int = 0
    checked: int = 0
    waited: int = 0
    runs: dict[str, set[str]] = field(default_factory=dict)


class Nudger:
    """Collapses nudges per deployment and sends them off the request path, one call per window."""

    def __init__(
        self,
        trigger: FlowRunTrigger | None = None,
        window_seconds: float = 1.0,
        waiting_cap_seconds: float = 20.0,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.trigger: FlowRunTrigger = trigger or PrefectTrigger()
        self.clock: Clock = clock or SystemClock()
        self.window_seconds = window_seconds
        self.waiting_cap_seconds = waiting_cap_seconds
        self.stats = NudgeStats()
        # Per deployment: the last run created and when (monotonic); whether it is known to have started.
        self._last_run: dict[str, tuple[str, float]] = {}
        self._started: set[str] = set()
        self._due: set[str] = set()
        self._next_allowed: dict[str, float] = {}
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> Nudger:
        """Start the sending thread (idempotent). It runs in a copy of the caller's context, so it
        sees the caller's Prefect settings."""
        with self._wake:
            if self._thread is not None:
                return self
            self._stopping = False
            context = contextvars.copy_context()
            self._thread = threading.Thread(target=context.run, args=(self._run,), name="nudger", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Send what is due now, then stop the thread and close the trigger's client (if it keeps one)."""
        with self._wake:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._stopping = True
                self._wake.notify_all()
        if thread is not None:
            thread.join(timeout)
        close = getattr(self.trigger, "close", None)
        if callable(close):
            close()

    def nudge(self, deployment: str) -> None:
        """Mark ``deployment`` as due; cheap and thread-safe (a flag, no I/O)."""
        with self._wake:
            self.stats.requested += 1
            if deployment not in self._due:
                self._due.add(deployment)
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                ready = self._ready_or_wait()
                if ready is None:
                    return
            for deployment in ready:
                self._send(deployment)

    def _ready_or_wait(self) -> list[str] | None:
        """Due deployments whose window allows a call now; waits (lock held by caller) until there are.
        None means stop."""
        while True:
            now = self.clock.monotonic()
            ready = [d for d in self._due if self._stopping or self._next_allowed.get(d, 0.0) <= now]
            if ready:
                for deployment in ready:
                    self._due.discard(deployment)
                    self._next_allowed[deployment] = now + self.window_seconds
                return ready
            if self._stopping:
                return None
            # A deadline, not a timeout: a clock moved on between reading it and waiting must not
            # stretch the wait.
            deadlines = [self._next_allowed.get(d, 0.0) for d in self._due]
            self.clock.wait_until(self._wake, min(deadlines) if deadlines else None)

    def _send(self, deployment: str) -> None:
        """This window's one call for ``deployment``: read the waiting run's state, or create a run."""
        if self._still_waiting(deployment) is False:
            self._create(deployment)

    def _still_waiting(self, deployment: str) -> bool | None:
        """True when the last run created has not started (nothing to create); False when a run should
        be created now; None when this window's call was the read and the run has started."""
        last = self._last_run.get(deployment)
        read = getattr(self.trigger, "run_state", None)
        if last is None or read is None or deployment in self._started:
            return False
        run_id, created = last
        if self.clock.monotonic() - created >= self.waiting_cap_seconds:
            return False  # stuck (no runner?): it must not hold the events back any longer
        self.stats.checked += 1
        try:
            state = read(run_id)
        except Exception as exc:
            log.warning("reading the state of a %s run failed (%s)", deployment, type(exc).__name__)
            state = None
        if state in WAITING_STATES:
            self.stats.waited += 1
            return True
        # Running (or over): the events committed since its last claim need a follow-up run, which the
        # next window creates (one call per window).
        self._started.add(deployment)
        with self._wake:
            self._due.add(deployment)
            self._wake.notify()
        return None

    def _create(self, deployment: str) -> None:
        window_start = int(self.clock.time() // self.window_seconds)
        key = f"{deployment}:{window_start}"
        try:
            run_id = self.trigger.create_run(deployment, key)
        except Exception as exc:
            # Class name only: messages of HTTP errors can carry URLs with credentials.
            self.stats.failed += 1
            log.warning(
                "nudge of deployment %s failed (%s); the due-work watcher will pick the events up",
                deployment,
                type(exc).__name__,
            )
            return
        self.stats.sent += 1
        self.stats.runs.setdefault(deployment, set()).add(run_id)
        self._last_run[deployment] = (run_id, self.clock.monotonic())
        self._started.discard(deployment)
