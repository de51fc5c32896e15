"""Rows a run cannot send (a NULL, blank or duplicate identity): kept when planning, listed masked after.

Planning copies a bounded few of them out of its work table (which it drops) into the run's invalid
table, so the run's report reads them back without evaluating the model again; ``finish_run`` drops
that table with the staging table. The counts in the plan cover every row; the list is capped.
"""

from __future__ import annotations

from typing import Any

from iterable_recipes.masking import mask_identity
from iterable_recipes.sync import state
from iterable_recipes.sync.results import ChangeSetSummary

LISTED = 100  # duplicated identities a report lists (the most duplicated first); the counts cover all
NULL_SHOWN, BLANK_SHOWN, MORE_SHOWN = "(null)", "(blank)", "..."


def keep_invalid(cur: Any, work: str, invalid: str) -> None:
    """Copy the identity-less group and the ``LISTED`` most duplicated identities from the work table.

    The work table has one row per identity (NULL for every NULL or blank one) with its row count ``N``
    and how many of its rows had a NULL rather than a blank identity (``NULL_ROWS``). Planning calls it
    only when it counted invalid rows, and the list is read only then: a re-plan of the same run that
    has none never reads an earlier attempt's list, and any list it has replaces that one.
    """
    cur.execute(
        f"""CREATE OR REPLACE TABLE {invalid} AS
        SELECT ID AS IDENTITY, N, NULL_ROWS FROM {work}
        WHERE ID IS NULL OR N > 1
        ORDER BY IFF(ID IS NULL, 0, 1), N DESC, ID
        LIMIT {LISTED + 1}"""
    )


def _row(identity: str, reason: str, rows: int) -> dict[str, Any]:
    return {"identity": identity, "reason": reason, "rows": rows}


def invalid_rows(
    conn: Any,
    run_id: str,
    summary: ChangeSetSummary,
    *,
    state_schema: str | None = None,
    kind: str = "email",
    limit: int = LISTED,
) -> list[dict[str, Any]]:
    """The rows the run cannot send, for its report: identities masked, never the raw value.

    NULL and blank identities come first (one line each, with their row count), then up to ``limit``
    duplicated identities, the most duplicated first, then a line saying how many more there are.
    A plan without invalid rows keeps no list (``keep_invalid``): nothing to read.
    """
    if not summary.invalid_rows:
        return []
    cur = conn.cursor()
    try:
        cur.execute(
            f"""SELECT IDENTITY, N, NULL_ROWS FROM {state.invalid_table(state_schema, run_id)}
            ORDER BY IFF(IDENTITY IS NULL, 0, 1), N DESC, IDENTITY LIMIT {min(int(limit), LISTED) + 1}"""
        )
        found = cur.fetchall()
    finally:
        cur.close()
    listed: list[dict[str, Any]] = []
    duplicates = [(identity, int(n)) for identity, n, _ in found if identity is not None][: max(limit, 0)]
    for identity, n, null_rows in found:
        if identity is None:
            nulls = int(null_rows or 0)
            listed += [_row(NULL_SHOWN, "null identity", nulls)] if nulls else []
            listed += [_row(BLANK_SHOWN, "blank identity", int(n) - nulls)] if int(n) > nulls else []
    listed += [_row(mask_identity(identity, kind), "duplicate identity", n) for identity, n in duplicates]
    more = summary.duplicate_identities - len(duplicates)
    if more > 0:
        unlisted_rows = summary.duplicate_rows - sum(n for _, n in duplicates)
        listed.append(_row(MORE_SHOWN, f"{more} more duplicate identities not listed", unlisted_rows))
    return listed


def invalid_summary(summary: ChangeSetSummary) -> str:
    """What the run cannot send, in counts only (safe for state messages and logs)."""
    parts = []
    if summary.null_identities:
        parts.append(f"{summary.null_identities} with a NULL or blank identity")
    if summary.duplicate_rows:
        parts.append(
            f"{summary.duplicate_rows} sharing {summary.duplicate_identities} duplicated identit"
            + ("y" if summary.duplicate_identities == 1 else "ies")
        )
    return f"{summary.invalid_rows} row(s) of {summary.sync_name} cannot be sent: {', '.join(parts)}"
