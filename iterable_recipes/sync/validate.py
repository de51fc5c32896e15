"""Check a sync definition against the live source query: every mapped column exists with a fitting type."""

from __future__ import annotations

from typing import Any

from snowflake.connector.constants import FIELD_ID_TO_NAME

from iterable_recipes.config_files import ConfigError
from iterable_recipes.sync.definitions import (
    FieldMapping,
    FieldType,
    IdentityKind,
    SyncDefinition,
    SyncKind,
)
from iterable_recipes.sync.sql import source_subquery

_TIMESTAMPS = {"TIMESTAMP", "TIMESTAMP_NTZ", "TIMESTAMP_LTZ", "TIMESTAMP_TZ"}
_NUMBERS = {"FIXED", "REAL"}
_SCALARS = {"TEXT", "BOOLEAN", "DATE", "TIME"} | _NUMBERS | _TIMESTAMPS

# Which warehouse types each Iterable type can be sent from without guessing.
COMPATIBLE: dict[FieldType, set[str]] = {
    FieldType.STRING: _SCALARS,
    FieldType.NUMBER: _NUMBERS,
    FieldType.BOOLEAN: {"BOOLEAN"},
    FieldType.DATE: {"DATE"} | _TIMESTAMPS,
    FieldType.OBJECT: {"VARIANT", "OBJECT", "ARRAY"},
}
# The types Iterable may already hold a field as, for each type a mapping sends (GET /api/users/getFields).
ITERABLE_HOLDS: dict[FieldType, set[str]] = {
    FieldType.STRING: {"string", "keyword"},
    FieldType.NUMBER: {"long", "double"},
    FieldType.BOOLEAN: {"boolean"},
    FieldType.DATE: {"date"},
    FieldType.OBJECT: {"object", "nested"},
}
_IDENTITY_TYPES = {IdentityKind.EMAIL: {"TEXT"}, IdentityKind.USER_ID: {"TEXT", "FIXED"}}
# Names people write in source_type, as the connector reports them.
_ALIASES = {"NUMBER": "FIXED", "DECIMAL": "FIXED", "INTEGER": "FIXED", "INT": "FIXED", "FLOAT": "REAL",
            "DOUBLE": "REAL", "VARCHAR": "TEXT", "STRING": "TEXT"}  # fmt: skip


def describe_source(conn: Any, defn: SyncDefinition) -> dict[str, str]:
    """The source query's columns (upper-case name -> Snowflake type name), without reading rows."""
    cur = conn.cursor()
    try:
        cur.execute(f"SELECT * FROM {source_subquery(defn)} LIMIT 0")
        return {
            col.name.upper(): FIELD_ID_TO_NAME.get(col.type_code, str(col.type_code))
            for col in cur.description
        }
    finally:
        cur.close()


def validate_against_warehouse(defn: SyncDefinition, conn: Any) -> dict[str, str]:
    """Refuse a definition whose mapped or identity columns are missing or whose types no longer fit.

    Raises ConfigError listing every problem as ``file: key: problem``; returns the described columns.
    """
    try:
        columns = describe_source(conn, defn)
    except Exception as exc:  # the connector's errors carry no row data, only the SQL problem
        raise ConfigError(f"{defn.path}: source: the query failed: {exc}") from exc
    problems = []
    ident = defn.identity
    if ident.column not in columns:
        problems.append(f"identity.column: column {ident.column} is not in the source query")
    elif columns[ident.column] not in _IDENTITY_TYPES[ident.kind]:
        problems.append(
            f"identity.column: {ident.column} is {columns[ident.column]}, not usable as {ident.kind.value}"
        )
    for column, mapping in defn.fields.items():
        if column not in columns:
            problems.append(
                f"fields.{column}: column {column} is not in the source query (it has: {', '.join(columns)})"
            )
            continue
        actual = columns[column]
        if actual not in COMPATIBLE[mapping.type]:
            problems.append(
                f"fields.{column}.type: mapped as {mapping.type.value} but the column is {actual}"
            )
        pinned = _ALIASES.get(mapping.source_type or "", mapping.source_type)
        if pinned and pinned != actual and not (pinned in _TIMESTAMPS and actual in _TIMESTAMPS):
            problems.append(
                f"fields.{column}.source_type: declared {mapping.source_type} but the column is now {actual}"
            )
    if problems:
        raise ConfigError("\n".join(f"{defn.path}: {p}" for p in problems))
    return columns


def field_type_problem(mapping: FieldMapping, held: str | None) -> str | None:
    """Why Iterable would refuse ``mapping``'s values when it holds the field as ``held`` (None: the
    field is new to the project and takes the type of its first write), or None when it fits."""
    if held is None or held in ITERABLE_HOLDS[mapping.type]:
        return None
    return f"sent as {mapping.type.value}, but Iterable holds {mapping.field} as {held}"


def field_type_problems(defn: SyncDefinition, iterable_fields: dict[str, str]) -> list[str]:
    """Where the definition sends a user field as a type Iterable already holds differently (Iterable
    would refuse every such row); fields Iterable does not have yet take the type of their first write."""
    if defn.kind is not SyncKind.USER_PROFILES:
        return []  # getFields lists user fields; event fields are typed per event name
    problems = []
    for column, mapping in defn.fields.items():
        problem = field_type_problem(mapping, iterable_fields.get(mapping.field))
        if problem is not None:
            problems.append(f"{defn.path}: fields.{column}.type: {problem}")
    return problems
