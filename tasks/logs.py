"""What a run shows in Prefect's logs: the recipes' sentences through the run logger, and the library's
own warnings (a client retrying after a 429 or a 5xx, a Retry-After wait, a batch split) beside them.

Every record is masked where it is made (``install_masking``, the record factory every flow run
installs first), so what reaches Prefect's API holds no email address, API key or secret.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import get_run_logger
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

# The clients and engines log through the stdlib under this name (they know no Prefect).
LIBRARY_LOGGER = "iterable_recipes"


def how_many(n: int, noun: str) -> str:
    """``n`` and its noun for a task run's name: "1000 users", "1 lead" (no separators, names stay short)."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def run_logger() -> Any:
    """The logger of the current flow or task run (also on a worker thread started in its context)."""
    return get_run_logger()


def _in_a_run(record: logging.LogRecord) -> bool:
    """Only records made inside a flow or task run go to the API: the receiver and the CLI log in the
    same process (``recipes serve``), and the API handler would warn about each of their records."""
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def capture_library_logs() -> None:
    """Send the library's records made during a run to that run's logs in Prefect (idempotent).

    The same as ``PREFECT_LOGGING_EXTRA_LOGGERS=iterable_recipes``, without depending on every
    worker's and image's environment to say so.
    """
    logger = logging.getLogger(LIBRARY_LOGGER)
    if any(isinstance(handler, APILogHandler) for handler in logger.handlers):
        return
    handler = APILogHandler()
    handler.addFilter(_in_a_run)
    logger.addHandler(handler)
