"""What the production-topology tests ask of a running Prefect server and Iterable stand-in (the e2e test
and the container test share them)."""

from __future__ import annotations

from typing import Any

import httpx


def switch_off_schedules(api: str) -> dict[str, Any]:
    """Record what deploy declared, then switch the schedules off and drop the runs they made.

    The drains' backstop runs would only compete with the tested runs for this machine's two cores;
    the nudge (and the receiver's due-work watcher behind it) is what is tested here.
    """
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    declared: dict[str, Any] = {}
    with SyncPrefectClient(api) as client:
        for deployment in client.read_deployments():
            schedules = client.read_deployment_schedules(deployment.id)
            limit = deployment.global_concurrency_limit
            declared[deployment.name] = {
                "schedules": [(s.schedule.cron, s.schedule.timezone) for s in schedules],  # type: ignore[union-attr]
                "limit": limit.limit if limit else None,
                "pool": deployment.work_pool_name,
                "parameters": deployment.parameters,
            }
            for schedule in schedules:
                client.update_deployment_schedule(deployment.id, schedule.id, active=False)
        scheduled = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
        )
        for run in client.read_flow_runs(flow_run_filter=scheduled):
            client.delete_flow_run(run.id)
    return declared


def deployment_runs(api: str, deployment: str) -> list[Any]:
    """Every flow run of ``deployment`` (flow/deployment) on the Prefect server at ``api``."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with SyncPrefectClient(api) as client:
        deployment_id = client.read_deployment_by_name(deployment).id
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )


def event_writes(iterable: str, event_id: str) -> int:
    """How many times the Iterable stand-in at ``iterable`` wrote the event ``event_id``."""
    return int(httpx.get(f"{iterable}/_sandbox/stats", timeout=5).json()["event_writes"].get(event_id, 0))
