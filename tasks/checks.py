"""The checks a flow run starts with: only the live ones it uses, so a bad key or a disagreeing
consent policy fails the run with its cause before anything is claimed or read."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from iterable_recipes.checks import LIVE_CHECK_NAMES, CheckFailed, LiveCheck, check_at_start
from iterable_recipes.resources import Resources
from iterable_recipes.sync.definitions import SyncDefinition


@task(name="check before the run", cache_policy=NO_CACHE, persist_result=False)
def check_before_run(
    resources: Resources, names: Sequence[LiveCheck], definitions: Sequence[SyncDefinition] = ()
) -> None:
    """Run each live check of ``names`` (one that passed lately is trusted); raises CheckFailed when
    the configuration is wrong. A vendor that cannot answer now is logged and the run goes on: its
    sends meet the same outage, and the inbox or the sync's retries handle it as they always do."""
    logger = get_run_logger()
    for name in names:
        try:
            logger.info("%s: %s", LIVE_CHECK_NAMES[name], check_at_start(resources, name, definitions))
        except CheckFailed as failed:
            if not failed.retryable:
                raise
            logger.warning("%s could not be checked now (%s); going on", LIVE_CHECK_NAMES[name], failed)
