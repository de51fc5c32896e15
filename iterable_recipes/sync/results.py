"""What a plan and a finished run report: counts and ids only, never an identity, so safe to log."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# The reasons a row is staged with. LEAVING: an identity that left the model (a list member removed from
# the list, or, with ``on_row_removed: clear_fields``, a person whose synced fields are cleared).
LEAVING = "leaving"
RESYNC = "resync"  # an unchanged row sent again by a full resync (accepted before its epoch began)
REASONS = ("new", "changed", "rejected_retry", "not_found_retry", LEAVING, RESYNC)


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
    leaving: int = 0  # list members that left the model, to be removed from the list (in to_send)
    resent: int = 0  # unchanged rows a full resync sends again (in to_send)
    clears: bool = False  # departures are people whose synced fields are cleared, not list members

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

    def sentence(self) -> str:
        """The plan's log line: "Sync gitlab_marketing_contacts: 40,000 rows to send in 40 batches
        (12 new, 39,988 changed, 0 retried); 960,000 unchanged." (a dry run says what it would send)."""
        doing = "would send" if self.dry_run else "to send"
        gone = "left the model (their synced fields cleared)" if self.clears else "leaving the list"
        leaving = f", {self.leaving:,} {gone}" if self.leaving else ""
        leaving += f", {self.resent:,} sent again by the full resync" if self.resent else ""
        line = (
            f"Sync {self.sync_name}: {self.to_send:,} row(s) {doing} in {self.batches:,} batch(es) "
            f"({self.new:,} new, {self.changed:,} changed, {self.retried:,} retried{leaving}); "
            f"{self.unchanged:,} unchanged"
        )
        if self.not_found_waiting:
            line += f", {self.not_found_waiting:,} not in Iterable waiting for their next look"
        return line + "."


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
    removed: int = 0  # list members Iterable removed from the list in this run
    held_back: int = 0  # list members under a consent suppression, not added (tried again later)

    def as_dict(self) -> dict[str, Any]:
        """Plain counts, for a Prefect artifact or a log line."""
        return asdict(self)
