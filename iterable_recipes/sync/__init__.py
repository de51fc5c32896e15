"""The warehouse side of the Snowflake -> Iterable sync: the diff in SQL, its state, and batch reading.

Plain Python on snowflake-connector-python (no Prefect, no HTTP). The lead's tasks call, in order:
``ensure_state`` -> ``plan_changes`` -> ``iter_batches`` (send each batch) -> ``accept_batch`` per
batch -> ``finish_run``.
"""

from iterable_recipes.sync.accept import accept_all, accept_batch, finish_run
from iterable_recipes.sync.batches import Batch, iter_batches
from iterable_recipes.sync.connection import connect
from iterable_recipes.sync.plan import ChangeSetSummary, plan_changes, sample_changes
from iterable_recipes.sync.results import RunCounts
from iterable_recipes.sync.state import ensure_state
from iterable_recipes.sync.validate import validate_against_warehouse

__all__ = [
    "Batch",
    "ChangeSetSummary",
    "RunCounts",
    "accept_all",
    "accept_batch",
    "connect",
    "ensure_state",
    "finish_run",
    "iter_batches",
    "plan_changes",
    "sample_changes",
    "validate_against_warehouse",
]
