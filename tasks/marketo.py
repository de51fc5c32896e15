"""Tasks that read Marketo: poll one stream of unsubscribes into the inbox from its stored cursor."""

from __future__ import annotations

from datetime import datetime

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from iterable_recipes.optouts.poll import Stream, poll_stream
from iterable_recipes.resources import Resources


@task(name="poll-marketo-unsubscribes", cache_policy=NO_CACHE, persist_result=False)
def poll_unsubscribes(resources: Resources, stream: Stream, start: datetime | None = None) -> dict[str, int]:
    """Queue every unsubscribe of ``stream`` since its cursor; returns counts (pages, seen, queued)."""
    first_start = start or resources.settings.marketo_poll_start
    with resources.marketo() as client:
        counts = poll_stream(client, resources.inbox, stream, first_start)
    get_run_logger().info("marketo %s poll: %s", stream, counts)
    return counts
