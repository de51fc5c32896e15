"""The Prefect tasks the flows compose, by what they touch: Iterable, Marketo, the store, the warehouse,
and the run's reports. Each is a thin wrapper: the work itself is in the iterable_recipes package."""

from __future__ import annotations

from typing import TypeVar, cast

from prefect.utilities.annotations import quote

T = TypeVar("T")


def unwalked(value: T) -> T:
    """``value`` passed to a task without Prefect walking it for futures (batches hold thousands of
    items) nor keeping it after the task ends."""
    return cast(T, quote(value))
