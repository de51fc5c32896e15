"""A flow that logs an email address on purpose: run by a process worker, its log must arrive masked."""

from __future__ import annotations

from prefect import flow, get_run_logger

from iterable_recipes.resources import run_resources

PROBE_ADDRESS = "probe.person@example.com"


@flow(name="masking-probe")
def masking_probe() -> str:
    """Log a line with a raw address the way a careless recipe would; masking must catch it."""
    with run_resources():
        get_run_logger().info("looked up %s", PROBE_ADDRESS)
    return "logged"
