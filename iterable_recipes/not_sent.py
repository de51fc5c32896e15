"""The records a run did not put through, for its per-record table: the first few shown, all counted.

A drain notes each outcome it writes; a record that did not go through (due again, dead, skipped, held)
is listed until a later outcome of the same run delivers it. Only ids and masked identities are kept, so
a run failing for every record of a large backlog holds a set of integers, not its payloads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from iterable_recipes.store import Item, Outcome

NOT_SENT_ROWS = 100  # rows a run's table shows; the rest are counted in its last row
COLUMNS = ("identity", "reference", "status", "error", "next")


@dataclass(frozen=True)
class Noted:
    """One record a run did not put through: its inbox id, masked identity and stable reference."""

    item_id: int
    identity: str
    reference: str


# A record's masked identity and reference ("inbox 123", "lead 456, inbox 123"), from its claimed item.
Describe = Callable[[Item], tuple[str, str]]


def delivered(outcome: Outcome) -> bool:
    """The default of what went through: the record was delivered."""
    return outcome.status == "delivered"


class NotSent:
    """The records of one run that did not go through (thread-safe: a drain's batches settle in parallel)."""

    def __init__(
        self,
        describe: Describe,
        cap: int = NOT_SENT_ROWS,
        went_through: Callable[[Outcome], bool] = delivered,
    ) -> None:
        self.describe = describe
        self.went_through = went_through
        self.cap = cap
        self._shown: dict[int, Noted] = {}
        self._ids: set[int] = set()
        self._lock = threading.Lock()

    def note(self, items: Iterable[Item], outcomes: Sequence[Outcome], written: Mapping[str, int]) -> None:
        """Take in one batch's outcomes (after they were written): delivered records leave the list,
        the others join it. Outcomes not written (another drain holds the item) are not this run's."""
        if not outcomes or written.get("refused", 0) == len(outcomes):
            return
        failing = {o.item_id for o in outcomes if not self.went_through(o)}
        by_id = {item.id: item for item in items if item.id in failing} if failing else {}
        with self._lock:
            for outcome in outcomes:
                if self.went_through(outcome):
                    self._ids.discard(outcome.item_id)
                    self._shown.pop(outcome.item_id, None)
                    continue
                self._ids.add(outcome.item_id)
                item = by_id.get(outcome.item_id)
                if item is not None and outcome.item_id not in self._shown and len(self._shown) < self.cap:
                    identity, reference = self.describe(item)
                    self._shown[outcome.item_id] = Noted(outcome.item_id, identity, reference)

    @property
    def total(self) -> int:
        """How many records of the run did not go through."""
        with self._lock:
            return len(self._ids)

    def shown(self) -> list[Noted]:
        """The listed records, in the order they were first noted."""
        with self._lock:
            return list(self._shown.values())


def next_step(item: Item, max_attempts: int, skipped: Callable[[Item], str] | None = None) -> str:
    """What happens next to a record, from its inbox row as the run left it."""
    if item.status in ("retry", "pending"):
        return f"tried again at {_when(item.next_attempt_at)} (attempt {item.attempts + 1} of {max_attempts})"
    if item.status == "dead":
        return f"dead: nothing more is tried; `recipes inbox retry {item.id}` puts it back"
    if item.status == "skipped":
        return skipped(item) if skipped is not None else "nothing: not to be sent"
    return item.status.replace("_", " ")


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def table_rows(rows: Sequence[Mapping[str, str]], total: int) -> list[dict[str, str]]:
    """The table's rows, and a last row counting those not shown (``total`` in all)."""
    table = [dict(row) for row in rows]
    if total > len(table):
        table.append(
            {column: "" for column in COLUMNS} | {"identity": f"and {total - len(table):,} more not shown"}
        )
    return table
