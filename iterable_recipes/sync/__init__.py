"""Recipe 3, Snowflake -> Iterable: sync definitions, the diff in SQL, its state, batches and delivery.

The flow's steps, in order: ``plan_run`` (check the definition, materialise the change set once;
``invalid_rows`` lists the rows it cannot send) -> ``send_batches`` (read, send and accept batch by
batch: each answer appended to the run's answer log, merged into the state when the sending ends) ->
``finish_run`` (the run-history row).
"""

from iterable_recipes.sync.accept import accept_all, accept_batch, finish_run
from iterable_recipes.sync.answers import merge_answers
from iterable_recipes.sync.batches import Batch, iter_batches
from iterable_recipes.sync.connection import connect
from iterable_recipes.sync.invalid import invalid_rows, invalid_summary
from iterable_recipes.sync.plan import ChangeSetSummary, plan_changes, plan_run, sample_changes
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
    "invalid_rows",
    "invalid_summary",
    "iter_batches",
    "merge_answers",
    "plan_changes",
    "plan_run",
    "sample_changes",
    "validate_against_warehouse",
]
