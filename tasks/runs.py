"""Tasks over Prefect's own runs: start a run of a drain deployment when its work is due in seconds,
rather than at the drain's next scheduled run (every minute)."""

from __future__ import annotations

import time

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client

from iterable_recipes.resources import Resources

# Runs started within one window share an idempotency key: a burst of batches makes one run.
START_WINDOW_SECONDS = 1


@task(name="start-opt-out-drain", cache_policy=NO_CACHE, persist_result=False, retries=0)
def start_optout_drain(resources: Resources) -> str | None:
    """Start a run of the opt-out drain deployment now (one per window); its id, or None when the
    deployment cannot be started (not deployed, Prefect unreachable): its schedule drains them then."""
    name = resources.settings.optout_drain_deployment
    key = f"consent-after-write-{int(time.time()) // START_WINDOW_SECONDS}"
    try:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(name)
            run = client.create_flow_run_from_deployment(deployment.id, idempotency_key=key)
    except Exception as exc:  # a missed start only waits for the schedule; never fail the writer
        get_run_logger().warning(
            "Could not start a run of %s (%s): its schedule will drain the queued opt-outs",
            name,
            type(exc).__name__,
        )
        return None
    return str(run.id)
