"""SQL fragments shared by planning and reading: the normalised identity and the row hash of a model row."""

from __future__ import annotations

from datetime import UTC, datetime

from iterable_recipes.identities import TRIM_CHARS
from iterable_recipes.sync.definitions import IdentityKind, SyncDefinition

NULL_MARKER = "~"  # never produced by a present value, which always starts with its length and ':'


def source_subquery(defn: SyncDefinition) -> str:
    """The definition's source, usable as ``FROM (...) AS M``."""
    return f"({defn.source.query}) AS M"


# TRIM_CHARS as SQL, one CHR() per character: plain ASCII text that Snowflake and fakesnow read alike
# (a literal holding the characters themselves would depend on each dialect's escape rules).
EMAIL_TRIM_SQL = " || ".join(f"CHR({ord(char)})" for char in TRIM_CHARS)


def identity_expr(defn: SyncDefinition) -> str:
    """The identity as a trimmed string, NULL when missing or blank; emails exactly as
    ``normalise_email`` keys them (every Unicode whitespace and invisible character trimmed, lower-cased).

    Keys are compared as strings, as Hightouch does; emails are case-insensitive for Iterable, so two
    spellings of one address count as a duplicate rather than as two people, and a padded address is
    the same person the receiver, the poll and the opt-out know.
    """
    if defn.identity.kind is IdentityKind.EMAIL:
        # CAST, not TO_VARCHAR (the same for text): fakesnow drops TRIM's characters argument unless
        # its operand is already a cast to VARCHAR, so the test would not see what Snowflake runs.
        value = f"LOWER(TRIM(CAST(M.{defn.identity.column} AS VARCHAR), {EMAIL_TRIM_SQL}))"
    else:
        value = f"TRIM(TO_VARCHAR(M.{defn.identity.column}))"
    return f"NULLIF({value}, '')"


def row_hash_expr(defn: SyncDefinition) -> str:
    """SHA2 over the mapped columns in a fixed (sorted) order, plus the mapping's fingerprint.

    Each value is written as ``<length>:<text>`` and NULL as a marker, so no two different rows
    concatenate to the same string and a value turning NULL counts as a change. OBJECT_CONSTRUCT and
    HASH() are avoided on purpose: their output is not stable under fakesnow (research/fakesnow.md §4).
    """
    parts = [f"'{defn.mapping_fingerprint}'"]
    for column in defn.columns:
        text = f"TO_VARCHAR(M.{column})"
        parts.append(f"COALESCE(LENGTH({text})::VARCHAR || ':' || {text}, '{NULL_MARKER}')")
    return f"SHA2(CONCAT_WS('|', {', '.join(parts)}), 256)"


def value_columns(defn: SyncDefinition) -> list[tuple[str, str]]:
    """Each mapped column with the name its value has in the work and staging tables (F0, F1, ...).

    Positional names, in the row hash's (sorted) column order, so any source column name fits.
    """
    return [(column, f"F{i}") for i, column in enumerate(defn.columns)]


def literal(value: str) -> str:
    """A single-quoted SQL string literal for values of restricted shape (names, run ids, timestamps).

    Statements that embed the source SQL are sent without bind parameters, because the connector's
    client-side binding would read any ``%`` in that SQL as a placeholder.
    """
    if "\\" in value or "'" in value:
        raise ValueError("literal values here never contain quotes or backslashes")
    return f"'{value}'"


def utc_text(moment: datetime) -> str:
    """A moment as the UTC wall-clock text stored in TIMESTAMP_NTZ columns (naive means UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def utc_now() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)
