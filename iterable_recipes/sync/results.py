"""What a plan and a finished run report: counts and ids only, never an identity, so safe to log."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ChangeSetSummary:
    """The change set one run materialised, and what the model looked like when it was planned."""

    run_id: str
    sync_name: str
    dry_run: bool
    rows_in_model: int
    new: int
    changed: int
    unchanged: int
    rejected_retry: int
    not_found_retry: int
    not_found_waiting: int  # not in Iterable last time, unchanged, retry interval not yet over
    duplicate_rows: int  # rows whose identity appears more than once (left out, never sent)
    duplicate_identities: int
    null_identities: int  # rows with a NULL or blank identity (left out, never sent)
    removed_from_state: int  # state entries whose identity left the model
    to_send: int
    batches: int

    @property
    def retried(self) -> int:
        """Rows sent again because Iterable rejected them or did not know the person."""
        return self.rejected_retry + self.not_found_retry

    @property
    def invalid_rows(self) -> int:
        """Rows the run cannot send: a NULL or blank identity, or one shared with another row."""
        return self.null_identities + self.duplicate_rows

    def as_dict(self) -> dict[str, Any]:
        """Plain counts, for a Prefect artifact or a log line."""
        return asdict(self) | {"retried": self.retried}


@dataclass(frozen=True)
class RunCounts:
    """The run-history row as finish_run wrote it."""

    run_id: str
    sync_name: str
    status: str
    dry_run: bool
    rows_in_model: int
    new: int
    changed: int
    unchanged: int
    retried: int
    duplicates: int
    null_identities: int
    to_send: int
    accepted: int
    rejected: int
    not_in_iterable: int

    def as_dict(self) -> dict[str, Any]:
        """Plain counts, for a Prefect artifact or a log line."""
        return asdict(self)
