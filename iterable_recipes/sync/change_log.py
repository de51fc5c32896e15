"""The sync's change log in the warehouse: each row a run sent, what Iterable made of it, and why.

One row per staged row answered (accepted, rejected, held, not in Iterable) or in a batch Iterable did
not accept (failed), written in the same transaction as the state it records. The identity is kept only
as its SHA-256 (hex, of the identity as the sync keys it), so an operator follows one person with
``recipes sync log NAME --identity ADDRESS`` without the log holding the address; rows older than
``SYNC_CHANGE_LOG_DAYS`` are deleted at the end of each run of the sync.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from iterable_recipes.identities import normalise_email
from iterable_recipes.masking import mask_emails, mask_identity
from iterable_recipes.sync import state
from iterable_recipes.sync.definitions import IdentityKind, SyncDefinition
from iterable_recipes.sync.sql import utc_now, utc_text

# The reasons a row is held back for consent: an event until the opt-out is in place, a list member
# while the suppression lasts.
CONSENT_HOLD = "consent-hold: waiting for the opt-out of this person"
HELD_BACK = "held back: under a Marketo suppression, never added to a marketing list"
REFERENCE_HEX = 12  # the row reference shown in artifacts: the start of the identity's hash
# What happens next to a row, by its last status in the run.
NEXT = {
    "rejected": "sent again by the next run",
    "held": "sent by a later run once the opt-out is in place (to a list: once the suppression is lifted)",
    "not_in_iterable": "looked at again by a later run; update mode creates nobody",
    "failed": "sent again by the next run, or a retry of this one",
}


def status_of(reason: str) -> str:
    """The log status of a row Iterable did not take: held back for an opt-out, or rejected."""
    return "held" if reason in (CONSENT_HOLD, HELD_BACK) else "rejected"


def identity_hash(identity: str, kind: IdentityKind) -> str:
    """The hash the log keeps of ``identity``, keyed as the sync keys it (emails normalised)."""
    key = normalise_email(identity) if kind is IdentityKind.EMAIL else identity.strip()
    return hashlib.sha256(key.encode()).hexdigest()


# Each identity's last word in one run: accepted wins a tie, as it is recorded after any failure.
_LAST = """SELECT IDENTITY_HASH, STATUS, ERROR, OPERATION FROM {log}
    WHERE SYNC_NAME = %s AND RUN_ID = %s
    QUALIFY ROW_NUMBER() OVER (PARTITION BY IDENTITY_HASH
        ORDER BY LOGGED_AT DESC, IFF(STATUS = 'accepted', 0, 1)) = 1"""


def not_sent_rows(
    conn: Any, defn: SyncDefinition, run_id: str, state_schema: str | None, cap: int
) -> tuple[list[dict[str, str]], int]:
    """The run's rows that did not go through, for its per-record table (masked, at most ``cap``; rows
    Iterable answered one by one first, then those of batches it refused whole), and how many in all.
    Read while the run's staging table still exists."""
    schema = state.state_schema_name(state_schema)
    last = _LAST.format(log=state.table(schema, state.CHANGE_LOG))
    cur = conn.cursor()
    try:
        # A plain count first: most runs have no such row, and then skip the per-identity window.
        cur.execute(
            f"""SELECT COUNT(*) FROM {state.table(schema, state.CHANGE_LOG)}
            WHERE SYNC_NAME = %s AND RUN_ID = %s AND STATUS <> 'accepted'""",
            (defn.name, run_id),
        )
        if not int(cur.fetchone()[0]):
            return [], 0
        cur.execute(f"SELECT COUNT(*) FROM ({last}) L WHERE STATUS <> 'accepted'", (defn.name, run_id))
        total = int(cur.fetchone()[0])
        if not total:
            return [], 0
        cur.execute(
            f"""SELECT S.IDENTITY, L.IDENTITY_HASH, L.STATUS, L.ERROR, L.OPERATION
            FROM ({last}) L JOIN {state.stage_table(schema, run_id)} S
              ON SHA2(S.IDENTITY, 256) = L.IDENTITY_HASH
            WHERE L.STATUS <> 'accepted' ORDER BY IFF(L.STATUS = 'failed', 1, 0), L.IDENTITY_HASH
            LIMIT {int(cap)}""",
            (defn.name, run_id),
        )
        found = cur.fetchall()
    finally:
        cur.close()
    rows = [
        {
            "identity": mask_identity(str(identity), defn.identity.kind.value),
            "reference": f"row {digest[:REFERENCE_HEX]} ({operation})",
            "status": str(status),
            "error": mask_emails(str(error or "")),
            "next": NEXT.get(str(status), ""),
        }
        for identity, digest, status, error, operation in found
    ]
    return rows, total


@dataclass(frozen=True)
class LogEntry:
    """One change-log row as ``recipes sync log`` shows it (no identity: the caller named it)."""

    run_id: str
    operation: str
    status: str
    error: str
    logged_at: datetime


def history(
    conn: Any, sync: str, identity_sha256: str, state_schema: str | None = None, limit: int = 50
) -> list[LogEntry]:
    """What the change log holds for one identity of ``sync`` (its ``identity_hash``), newest first."""
    log = state.table(state.state_schema_name(state_schema), state.CHANGE_LOG)
    cur = conn.cursor()
    try:
        cur.execute(
            f"""SELECT RUN_ID, OPERATION, STATUS, ERROR, LOGGED_AT FROM {log}
            WHERE SYNC_NAME = %s AND IDENTITY_HASH = %s ORDER BY LOGGED_AT DESC LIMIT {int(limit)}""",
            (sync, identity_sha256),
        )
        return [LogEntry(str(r), str(o), str(s), str(e or ""), t) for r, o, s, e, t in cur.fetchall()]
    finally:
        cur.close()


def expire(
    conn: Any, sync: str, days: float, state_schema: str | None = None, now: datetime | None = None
) -> int:
    """Delete ``sync``'s change-log rows older than ``days`` (0 keeps none past the run); returns how many."""
    log = state.table(state.state_schema_name(state_schema), state.CHANGE_LOG)
    cutoff = utc_text((now or utc_now()) - timedelta(days=days))
    cur = conn.cursor()
    try:
        cur.execute(
            f"DELETE FROM {log} WHERE SYNC_NAME = %s AND LOGGED_AT <= %s::TIMESTAMP_NTZ", (sync, cutoff)
        )
        return int(cur.rowcount or 0)
    finally:
        cur.close()
