"""Sync definitions (warehouse model -> Iterable) as YAML files validated when loaded; no schedules here.

Each sync is the file named after it (``<name>.yaml`` or ``.yml``) in the definitions folder, so a run
reads only its own file and a bad file fails only its own sync.
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)

from iterable_recipes.clients.iterable_models import refuse_subscription_field
from iterable_recipes.config_files import ConfigError, load_yaml_model

SYNCS_DIR = Path(__file__).resolve().parent / "syncs"
# Example definitions (documentation, left out of the wheel): never a folder syncs are loaded from.
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
SYNC_SUFFIXES = (".yaml", ".yml")
SYNC_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
MAX_BATCH_SIZE = 1000  # Iterable's bulk endpoints take at most 1000 items per request.

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_QUALIFIED = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*){0,2}$")


class IdentityKind(StrEnum):
    """How Iterable identifies the person: the project's user key."""

    EMAIL = "email"
    USER_ID = "userId"


class SyncKind(StrEnum):
    """What each row becomes in Iterable."""

    USER_PROFILES = "user_profiles"
    CUSTOM_EVENTS = "custom_events"
    # Each row is a member of one Iterable static list: entering rows join it, rows that left the
    # model leave it (lists/subscribe and lists/unsubscribe). Nothing else about the person is written.
    LIST_MEMBERSHIP = "list_membership"


class SyncMode(StrEnum):
    """``update`` touches only people already in Iterable; ``upsert`` may create them."""

    UPDATE = "update"
    UPSERT = "upsert"


class FieldType(StrEnum):
    """The Iterable type a mapped column is sent as (Iterable fixes a field's type on first write)."""

    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"  # sent as "YYYY-MM-DD HH:MM:SS +00:00"
    OBJECT = "object"  # nested JSON (object, or array of objects)


def _check_identifier(value: str, what: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ValueError(f"{what} {value!r} is not a plain SQL identifier (letters, digits, _ and $)")
    # Snowflake folds unquoted identifiers to upper case; compare and emit them that way.
    return value.upper()


class FieldMapping(BaseModel):
    """One mapped column: the Iterable field it fills and the type it is sent as."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(min_length=1, max_length=200)
    type: FieldType
    # Optional pin of the warehouse type (TEXT, NUMBER, BOOLEAN, TIMESTAMP_NTZ, VARIANT, ...): a model
    # whose column changes type is then refused instead of silently changing what is sent.
    source_type: str | None = None
    # Iterable merges profiles, so an omitted null keeps the old value; sending null clears it.
    send_nulls: bool = False
    # Shown masked (its length only) wherever the project displays values, as in a dry run's preview;
    # what is sent is unchanged, so it is not part of the mapping's fingerprint.
    sensitive: bool = False

    @field_validator("sensitive", mode="before")
    @classmethod
    def _plain_boolean(cls, value: Any) -> Any:
        """Only YAML's true or false: a loose "no" or 0 read as a boolean could unmask a field."""
        if not isinstance(value, bool):
            raise ValueError(
                f"sensitive is true or false (true shows the field's values masked), not {value!r}"
            )
        return value

    @field_validator("field")
    @classmethod
    def _no_dots(cls, value: str) -> str:
        """Iterable reads dots as nesting, so a dotted name would not land where the mapping says."""
        if "." in value:
            raise ValueError("an Iterable field name may not contain '.'")
        return value

    @field_validator("field")
    @classmethod
    def _no_subscription_field(cls, value: str) -> str:
        """Subscriptions are never a sync's to write (refused for events too: one rule, no exceptions)."""
        return refuse_subscription_field(value)

    @field_validator("source_type")
    @classmethod
    def _upper_type(cls, value: str | None) -> str | None:
        """Warehouse type names are compared upper-case."""
        return value.upper() if value else value


class Source(BaseModel):
    """Where the rows come from: a SQL query or a table (exactly one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sql: str | None = None
    table: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        """A definition names one source, never both."""
        if bool(self.sql and self.sql.strip()) == bool(self.table):
            raise ValueError("give exactly one of 'sql' or 'table'")
        if self.table and not _QUALIFIED.match(self.table):
            raise ValueError(f"table {self.table!r} is not a [DATABASE.][SCHEMA.]TABLE name")
        return self

    @property
    def query(self) -> str:
        """The source as a query usable in a sub-select (trailing semicolons dropped)."""
        if self.table:
            return f"SELECT * FROM {self.table}"
        return (self.sql or "").strip().rstrip(";").strip()


class Identity(BaseModel):
    """The column that identifies each row and the person in Iterable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    kind: IdentityKind

    @field_validator("column")
    @classmethod
    def _ident(cls, value: str) -> str:
        """Columns are emitted unquoted in SQL, so only plain identifiers are allowed."""
        return _check_identifier(value, "column")


class SyncDefinition(BaseModel):
    """One warehouse -> Iterable sync; its schedule lives in prefect.yaml, not here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=SYNC_NAME)
    description: str = ""
    source: Source
    identity: Identity
    kind: SyncKind = SyncKind.USER_PROFILES
    mode: SyncMode = SyncMode.UPDATE
    event_name: str | None = None
    # kind list_membership: the static list's id, and whether it is a marketing list (the default: a
    # person under a Marketo suppression never joins one). Checked after ``kind``, which they need.
    list_id: int | None = Field(default=None, gt=0, validate_default=True)
    marketing: StrictBool | None = Field(default=None, validate_default=True)
    fields: dict[str, FieldMapping] = Field(default_factory=dict, validate_default=True)
    merge_nested_objects: bool = False
    not_in_iterable_retry_hours: float = Field(default=24.0, gt=0)
    batch_size: int = Field(default=MAX_BATCH_SIZE, ge=1, le=MAX_BATCH_SIZE)
    # Rows with a NULL, blank or duplicate identity are never sent. "warn" sends the other rows and ends
    # the run "Completed with warnings"; "fail" refuses the whole run, for a model where any such row
    # means the model itself is broken (sending the rest would then send a wrong picture).
    on_invalid_rows: Literal["warn", "fail"] = "warn"
    # A user profile row that leaves the model: "keep" leaves its person as Iterable has them;
    # "clear_fields" sets the fields this sync maps to null (never another field, never a deletion).
    on_row_removed: Literal["keep", "clear_fields"] = "keep"

    _path: str = PrivateAttr(default="<memory>")

    @model_validator(mode="before")
    @classmethod
    def _no_schedule(cls, data: Any) -> Any:
        """Say where schedules belong rather than just 'extra field'."""
        if isinstance(data, dict) and "schedule" in data:
            raise ValueError("'schedule' does not belong in a sync definition: prefect.yaml holds schedules")
        return data

    @model_validator(mode="before")
    @classmethod
    def _name_from_file(cls, data: Any, info: ValidationInfo) -> Any:
        """A definition may leave out its name: its file's name gives it."""
        path = info.context.get("path") if isinstance(info.context, dict) else None
        if isinstance(data, dict) and path and "name" not in data:
            return data | {"name": Path(path).stem}
        return data

    @field_validator("name")
    @classmethod
    def _named_like_its_file(cls, value: str, info: ValidationInfo) -> str:
        """A run finds a sync's file by the sync's name, so the two must agree."""
        path = info.context.get("path") if isinstance(info.context, dict) else None
        if path and value != Path(path).stem:
            raise ValueError(
                f"sync {value!r} is in {Path(path).name!r}: name the file {value}.yaml, "
                "or drop 'name' (the file's name gives it)"
            )
        return value

    @field_validator("list_id")
    @classmethod
    def _list_id_with_its_kind(cls, value: int | None, info: ValidationInfo) -> int | None:
        """A list sync names its list; no other kind has one."""
        kind = info.data.get("kind")
        if kind is SyncKind.LIST_MEMBERSHIP and value is None:
            raise ValueError("required when kind is list_membership: the id of the Iterable static list")
        if kind is not None and kind is not SyncKind.LIST_MEMBERSHIP and value is not None:
            raise ValueError("only applies to kind list_membership")
        return value

    @field_validator("marketing", mode="before")
    @classmethod
    def _marketing_is_true_or_false(cls, value: Any) -> Any:
        """YAML's true or false only: "no" or 0 would be a guess about consent."""
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {type(value).__name__} {value!r}")
        return value

    @field_validator("marketing")
    @classmethod
    def _marketing_with_its_kind(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        """Only a list is marketing or not; a marketing list is keyed by email, as the consent ledger is."""
        kind = info.data.get("kind")
        if kind is not None and kind is not SyncKind.LIST_MEMBERSHIP and value is not None:
            raise ValueError("only applies to kind list_membership")
        identity = info.data.get("identity")
        if (
            kind is SyncKind.LIST_MEMBERSHIP
            and value is not False
            and identity is not None
            and identity.kind is not IdentityKind.EMAIL
        ):
            raise ValueError(
                "a marketing list (the default) must be keyed by email: the consent ledger knows people "
                "by address, so suppressed people could not be held back; key it by email, or set "
                "marketing: false for a list that is not marketing"
            )
        return value

    @field_validator("fields")
    @classmethod
    def _columns(cls, value: dict[str, FieldMapping], info: ValidationInfo) -> dict[str, FieldMapping]:
        """Column keys become upper-case identifiers; Iterable field names must be unique; a list sync
        maps none (it writes membership alone), every other kind at least one."""
        kind = info.data.get("kind")
        if kind is SyncKind.LIST_MEMBERSHIP and value:
            raise ValueError("a list_membership sync maps no fields: it writes list membership alone")
        if kind is not None and kind is not SyncKind.LIST_MEMBERSHIP and not value:
            raise ValueError("at least one mapped column is required")
        out: dict[str, FieldMapping] = {}
        seen: dict[str, str] = {}
        for column, mapping in value.items():
            key = _check_identifier(column, "column")
            if key in out:
                raise ValueError(f"column {key} is mapped twice")
            if mapping.field in seen:
                raise ValueError(
                    f"Iterable field {mapping.field!r} is filled by both {seen[mapping.field]} and {key}"
                )
            seen[mapping.field] = key
            out[key] = mapping
        return out

    @model_validator(mode="after")
    def _coherent(self, info: ValidationInfo) -> SyncDefinition:
        """Cross-field rules, then remember the file for later error messages."""
        if self.kind is SyncKind.CUSTOM_EVENTS and not (self.event_name and self.event_name.strip()):
            raise ValueError("event_name is required when kind is custom_events")
        if self.kind is not SyncKind.CUSTOM_EVENTS and self.event_name:
            raise ValueError("event_name only applies to kind custom_events")
        if self.kind is SyncKind.LIST_MEMBERSHIP and self.mode is SyncMode.UPSERT:
            raise ValueError("mode upsert does not apply to kind list_membership: a list sync creates nobody")
        if self.on_row_removed == "clear_fields" and self.kind is not SyncKind.USER_PROFILES:
            raise ValueError(
                "on_row_removed: clear_fields only applies to kind user_profiles (an event is not "
                "cleared; a list sync removes members who leave its model already)"
            )
        if self.merge_nested_objects and not any(m.type is FieldType.OBJECT for m in self.fields.values()):
            raise ValueError("merge_nested_objects is set but no field has type object")
        if isinstance(info.context, dict) and info.context.get("path"):
            self._path = str(info.context["path"])
        return self

    @property
    def path(self) -> str:
        """The file this definition was loaded from (for error messages)."""
        return self._path

    @property
    def is_list(self) -> bool:
        """Whether rows are members of a static list (kind list_membership)."""
        return self.kind is SyncKind.LIST_MEMBERSHIP

    @property
    def stages_departures(self) -> bool:
        """Whether identities that left the model are sent too: list members (removed from the list)
        and, with ``on_row_removed: clear_fields``, people whose synced fields are cleared."""
        return self.is_list or self.on_row_removed == "clear_fields"

    @property
    def is_marketing_list(self) -> bool:
        """A list sync whose list counts as marketing: every one unless ``marketing: false``."""
        return self.is_list and self.marketing is not False

    @property
    def columns(self) -> list[str]:
        """Mapped columns in the fixed order the row hash uses (sorted, so YAML order does not matter)."""
        return sorted(self.fields)

    @property
    def mapping_fingerprint(self) -> str:
        """A short digest of what is sent; part of every row hash, so a mapping change resends all rows."""
        spec: dict[str, Any] = {
            "kind": self.kind.value,
            "event": self.event_name,
            "fields": [[c, self.fields[c].field, self.fields[c].type.value] for c in self.columns],
        }
        if self.list_id is not None:
            # Only when set: the other kinds' fingerprints (and so their snapshots) stay as they were.
            spec["list"] = self.list_id
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def load_sync_definition(path: Path | str) -> SyncDefinition:
    """Load and validate one sync definition; a bad file raises ConfigError naming file, key and problem."""
    return load_yaml_model(path, SyncDefinition)


def load_named_sync(name: str, directory: Path | str = SYNCS_DIR) -> SyncDefinition:
    """Load the sync ``name`` from its own file in ``directory``, reading no other file; an unknown
    name or a bad file raises ConfigError naming the folder or the file, the key and the problem."""
    folder = _definitions_folder(directory)
    if not re.match(SYNC_NAME, name):
        raise ConfigError(f"{name!r} is not a sync name (lower-case letters, digits, _ and -)")
    paths = [path for suffix in SYNC_SUFFIXES if (path := folder / f"{name}{suffix}").is_file()]
    if not paths:
        known = ", ".join(sorted({p.stem for p in _sync_files(folder)})) or "none"
        raise ConfigError(f"unknown sync {name!r}: no {name}.yaml in {folder}; the folder holds: {known}")
    if len(paths) > 1:
        raise ConfigError(f"{paths[1]}: name: sync {name!r} is already defined in {paths[0]}")
    return load_sync_definition(paths[0])


def all_sync_definitions(directory: Path | str = SYNCS_DIR) -> dict[str, SyncDefinition]:
    """Every sync definition in ``directory``, keyed by name (for checks; a run loads only its own).

    Every file is read even after a bad one: the ConfigError lists every problem of every bad file at
    once, each line naming its file and key.
    """
    found, problems = read_sync_definitions(directory)
    if problems:
        raise ConfigError("\n".join(problems.values()))
    return found


def read_sync_definitions(
    directory: Path | str = SYNCS_DIR,
) -> tuple[dict[str, SyncDefinition], dict[Path, str]]:
    """The good definitions of ``directory`` by name, and each bad file's problems (file, key, problem)."""
    found: dict[str, SyncDefinition] = {}
    problems: dict[Path, str] = {}
    try:
        folder = _definitions_folder(directory)
    except ConfigError as exc:
        return found, {Path(directory): str(exc)}
    for path in _sync_files(folder):
        try:
            defn = load_sync_definition(path)
        except ConfigError as exc:
            problems[path] = str(exc)
            continue
        if defn.name in found:
            problems[path] = f"{path}: name: sync {defn.name!r} is already defined in {found[defn.name].path}"
            continue
        found[defn.name] = defn
    return found, problems


def _definitions_folder(directory: Path | str) -> Path:
    """``directory`` as a folder of definitions; the examples folder is refused (ConfigError): its files
    show how to write a sync, and their placeholder ids would be sent to as if they were real."""
    folder = Path(directory)
    if folder.resolve() == EXAMPLES_DIR:
        raise ConfigError(
            f"{folder}: this folder holds example definitions, never loaded as syncs; copy an example "
            "into SYNC_DEFINITIONS_DIR (by default the shipped syncs/ folder) to use it"
        )
    return folder


def _sync_files(folder: Path) -> list[Path]:
    """The definition files of ``folder``, sorted by name (``.yaml`` before ``.yml`` for one sync)."""
    return (
        sorted(p for p in folder.iterdir() if p.suffix in SYNC_SUFFIXES and p.is_file())
        if folder.is_dir()
        else []
    )
