"""SQL fragments shared by planning and reading: the normalised identity and the row hash of a model row."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from iterable_recipes.identities import TRIM_CHARS
from iterable_recipes.sync.definitions import IdentityKind, SyncDefinition

V1_NULL_MARKER = "~"  # the version 1 hash's NULL: a present value there starts with its length and ':'


def source_subquery(defn: SyncDefinition) -> str:
    """The definition's source, usable as ``FROM (...) AS M``."""
    return f"({defn.source.query}) AS M"


# TRIM_CHARS as SQL: their UTF-8 bytes in hex, plain ASCII text that Snowflake and fakesnow read alike
# (a literal holding the characters themselves would depend on each dialect's escape rules). One call,
# not a CHR() per character: fakesnow walks every node of a statement some 70 times before running it.
EMAIL_TRIM_SQL = f"HEX_DECODE_STRING('{TRIM_CHARS.encode().hex().upper()}')"


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
        text = f"CAST(M.{defn.identity.column} AS VARCHAR)"
        # TRIM with a set of characters costs ten times the rest under fakesnow (DuckDB reads the set
        # for every row); it changes nothing unless the first or last character is in the set.
        ends = f"CONTAINS({EMAIL_TRIM_SQL}, LEFT({text}, 1)) OR CONTAINS({EMAIL_TRIM_SQL}, RIGHT({text}, 1))"
        value = f"LOWER(IFF({ends}, TRIM({text}, {EMAIL_TRIM_SQL}), {text}))"
    else:
        value = f"TRIM(TO_VARCHAR(M.{defn.identity.column}))"
    return f"NULLIF({value}, '')"


# The row hash, version HASH_VERSION. Its input: the mapping's fingerprint, then each mapped column's value
# as text, joined by SEPARATOR. Text and semi-structured values double every CHR(31) in them; the other
# types' texts never hold one; NULL is NULL_MARK. Read left to right, a CHR(31) is followed by another
# (a doubled one: part of a value), by CHR(30) (a separator) or by 'N' (a NULL), so no two different
# rows give one input, and NULL differs from ''. Plain || (never CONCAT_WS or LENGTH, which fakesnow
# rewrites into CASE expressions that compute each part twice) and one cast per value. The marks are
# written as hex, each one call: the same strings as CHR(31) || CHR(30) and so on (the pinned hash says
# so), in a third of the nodes, and fakesnow's cost of a statement grows with its nodes.
HASH_VERSION = 2
UNIT_SEPARATOR = "HEX_DECODE_STRING('1F')"  # CHR(31)
DOUBLED_UNIT_SEPARATOR = "HEX_DECODE_STRING('1F1F')"
SEPARATOR = "HEX_DECODE_STRING('1F1E')"  # CHR(31) || CHR(30)
NULL_MARK = "HEX_DECODE_STRING('1F4E')"  # CHR(31) || 'N'
# Explicit formats: without one, Snowflake's TO_VARCHAR follows the session's output formats (the
# default TIMESTAMP_OUTPUT_FORMAT keeps milliseconds only). The casts give the value a type sqlglot knows,
# so fakesnow turns the format into DuckDB's STRFTIME one to one (for an untyped column it drops it).
TIMESTAMP_FORMAT = "'YYYY-MM-DD HH24:MI:SS.FF9'"


def value_text(column: str, warehouse_type: str | None) -> str:
    """One mapped value as the row hash's text, cast once, by its warehouse type (``describe_source``).

    Numbers and booleans have no session-dependent text; dates, times and timestamps get an explicit
    format; TIMESTAMP_TZ and _LTZ are taken in UTC (an LTZ's text would follow the session's TIMEZONE),
    as Iterable is sent them. A type not known here is taken as text, CHR(31) doubled.
    """
    value = f"M.{column}"
    kind = (warehouse_type or "").upper()
    if kind in {"FIXED", "REAL", "BOOLEAN"}:
        return f"TO_VARCHAR({value})"
    if kind == "DATE":
        return f"TO_VARCHAR(CAST({value} AS DATE), 'YYYY-MM-DD')"
    if kind in {"TIMESTAMP_NTZ", "TIMESTAMP"}:
        # DATETIME is Snowflake's synonym of TIMESTAMP_NTZ (a no-op here); fakesnow would wrap a cast to
        # TIMESTAMP_NTZ itself in a macro that first tries each value as a number.
        return f"TO_VARCHAR(CAST({value} AS DATETIME), {TIMESTAMP_FORMAT})"
    if kind in {"TIMESTAMP_TZ", "TIMESTAMP_LTZ"}:
        return f"TO_VARCHAR(CAST(CONVERT_TIMEZONE('UTC', {value}) AS DATETIME), {TIMESTAMP_FORMAT})"
    if kind == "TIME":
        return f"TO_VARCHAR(TIMESTAMP_NTZ_FROM_PARTS(CAST('1970-01-01' AS DATE), {value}), 'HH24:MI:SS.FF9')"
    return f"REPLACE(TO_VARCHAR({value}), {UNIT_SEPARATOR}, {DOUBLED_UNIT_SEPARATOR})"


def row_hash_expr(defn: SyncDefinition, types: Mapping[str, str]) -> str:
    """MD5 over the mapping's fingerprint and the mapped columns in a fixed (sorted) order.

    ``types`` maps each source column to its warehouse type (``validate.describe_source``). No two
    different rows give the same input, a value turning NULL counts as a change, and a mapping change
    changes every hash. OBJECT_CONSTRUCT and HASH() are avoided on purpose: their output is not stable
    under fakesnow (research/fakesnow.md §4). Changing this expression is a migration of every
    snapshot: raise HASH_VERSION and keep the old expression for ``sync/rehash.py``.
    """
    parts = [f"'{defn.mapping_fingerprint}'"]
    for column in defn.columns:
        parts += [SEPARATOR, f"COALESCE({value_text(column, types.get(column))}, {NULL_MARK})"]
    return f"MD5({_concatenated(parts)})"


def _concatenated(parts: list[str]) -> str:
    """``a || b || ...`` as a balanced tree: the same string, but a left-deep chain copies the growing
    prefix at every step (measured under fakesnow: half the hash's CPU at 19 columns)."""
    if len(parts) == 1:
        return parts[0]
    middle = len(parts) // 2
    return f"({_concatenated(parts[:middle])} || {_concatenated(parts[middle:])})"


def row_hash_v1_expr(defn: SyncDefinition) -> str:
    """The row hash before HASH_VERSION 2, byte for byte as it was, only to migrate its snapshots.

    SHA2 over ``<length>:<text>`` of each TO_VARCHAR value (NULL as ``~``) joined by '|'.
    """
    parts = [f"'{defn.mapping_fingerprint}'"]
    for column in defn.columns:
        text = f"TO_VARCHAR(M.{column})"
        parts.append(f"COALESCE(LENGTH({text})::VARCHAR || ':' || {text}, '{V1_NULL_MARKER}')")
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
