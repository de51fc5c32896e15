"""A dry run's preview: for a sample of the staged rows, each field as Iterable holds it and as the run
would write it, whether Iterable's field type takes it, and what the run would not send and why.

Iterable is only read (getByEmail or byUserId, getFields), through the run's client and its shared
limiter. A read that fails leaves "unknown" with the masked cause, never a guessed value. Everything
returned is masked: identities in the masker's form, email-shaped values masked, fields marked
``sensitive`` shown as their length only.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from iterable_recipes.clients.errors import ApiError
from iterable_recipes.clients.iterable import IterableClient
from iterable_recipes.clients.iterable_models import IterableUser
from iterable_recipes.clients.lookups import Found, look_up_many, look_up_many_by_user_id
from iterable_recipes.masking import mask_emails, mask_identity
from iterable_recipes.sentences import counted, error_text
from iterable_recipes.sync import state
from iterable_recipes.sync.batches import item_builder
from iterable_recipes.sync.definitions import FieldMapping, IdentityKind, SyncDefinition, SyncKind, SyncMode
from iterable_recipes.sync.results import ChangeSetSummary
from iterable_recipes.sync.sql import value_columns
from iterable_recipes.sync.validate import field_type_problem

SHOWN_CHARS = 80  # a cell longer than this is cut (after masking, so a cut never uncovers an address)
# What a cell says instead of a value.
ABSENT, NOT_IN_ITERABLE, NOT_SENT = "(none)", "(not in Iterable)", "(not sent: null)"
EVENT, EVENT_CHANGE, EVENT_TYPE = (
    "(an event: nothing to read)",
    "sent in the event",
    "not checked (event field)",
)
SAME, NEW, CHANGED, UNKNOWN = "same", "new", "changed", "unknown"
KEPT = "kept (null not sent)"
SKIPPED = "skipped (not in Iterable; update mode creates nobody)"
COLUMNS = ("identity", "field", "now in Iterable", "would write", "change", "type")
_MISSING = object()


Read = Found | Exception  # a look-up's outcome, or why Iterable could not be read at all


def unknown(error: BaseException) -> str:
    """The cell of a value Iterable did not give us: never a guess, and the cause masked."""
    if isinstance(error, ApiError):
        return f"unknown (Iterable did not answer: {error_text(error)})"
    return f"unknown (Iterable not read: {error_text(error)})"


@dataclass(frozen=True)
class StagedRow:
    """One staged row of the run: its identity and the item the run would send."""

    identity: str
    item: dict[str, Any]


@dataclass(frozen=True)
class Preview:
    """The preview's table rows (masked) and its counts (numbers and field names only, safe to log)."""

    sync_name: str
    rows: list[dict[str, str]]
    sampled: int = 0
    in_iterable: int = 0
    not_in_iterable: int = 0
    unanswered: int = 0
    changes: dict[str, int] = field(default_factory=dict)
    type_problems: dict[str, str] = field(default_factory=dict)  # Iterable field -> problem
    types_unknown: bool = False

    def table(self) -> list[dict[str, str]]:
        """The artifact's rows; one saying so when nothing would change."""
        if self.rows:
            return self.rows
        return [dict.fromkeys(COLUMNS, "") | {"change": "nothing would change"}]

    def sentence(self, then: str = "") -> str:
        """The dry run's log line: "Dry run of contacts previewed 38 field values of 2 sampled rows:
        30 new, 5 same, 3 changed; 1 of the sampled people not in Iterable; 1 field type problem", and
        ``then`` (what a real run would send)."""
        tally = ", ".join(
            f"{n:,} {change}" for change, n in sorted(self.changes.items(), key=lambda c: -c[1])
        )
        line = (
            f"Dry run of {self.sync_name} previewed {counted(len(self.rows), 'field value')} of "
            f"{counted(self.sampled, 'sampled row')}" + (f": {tally}" if tally else "")
        )
        if self.not_in_iterable:
            line += f"; {self.not_in_iterable:,} of the sampled people not in Iterable"
        if self.unanswered:
            line += f"; Iterable did not answer for {counted(self.unanswered, 'person', 'people')}"
        if self.type_problems:
            line += f"; {counted(len(self.type_problems), 'field type problem')}"
        elif self.types_unknown:
            line += "; field types not checked (Iterable did not answer)"
        return line + (f"; {then}" if then else "") + "."


def staged_sample(
    conn: Any, defn: SyncDefinition, run_id: str, n: int, *, state_schema: str | None = None
) -> list[StagedRow]:
    """The first ``n`` staged rows of the run (batch order), each with the item the run would send:
    the values staged by the plan, converted as a real run converts them."""
    build = item_builder(defn)
    values = ", ".join(name for _, name in value_columns(defn))
    cur = conn.cursor()
    try:
        cur.execute(
            f"""SELECT IDENTITY, ROW_HASH, {values} FROM {state.stage_table(state_schema, run_id)}
            ORDER BY BATCH_NO, IDENTITY LIMIT {int(n)}"""
        )
        return [StagedRow(row[0], build(row[0], row[1], row[2:])) for row in cur.fetchall()]
    finally:
        cur.close()


def _shown(value: Any, mapping: FieldMapping) -> str:
    """A value for a cell: masked (a sensitive field shows its length only), JSON for non-strings."""
    if value is None:
        return "null"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    if mapping.sensitive:
        return f"*** ({len(text)} chars)"
    text = mask_emails(text)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def _same(now: Any, would: Any) -> bool:
    """Equal as Iterable would hold them (1 and 1.0 alike, but never true and 1)."""
    return bool(now == would) and isinstance(now, bool) == isinstance(would, bool)


def _look_up(client: IterableClient, defn: SyncDefinition, identities: Sequence[str]) -> list[Found]:
    if defn.identity.kind is IdentityKind.USER_ID:
        return look_up_many_by_user_id(client, identities)
    return look_up_many(client, identities)


def _types(client: IterableClient) -> dict[str, str] | Exception:
    try:
        return client.get_user_fields()
    except ApiError as error:
        return error


def _type_cell(mapping: FieldMapping, fields: dict[str, str] | Exception) -> str:
    if isinstance(fields, Exception):
        return unknown(fields)
    held = fields.get(mapping.field)
    problem = field_type_problem(mapping, held)
    if problem is not None:
        return f"problem: {problem}"
    return f"ok (Iterable holds it as {held})" if held else "ok (new field: this write fixes its type)"


def _change(defn: SyncDefinition, found: Read, now: Any, would: Any) -> str:
    if isinstance(found, Exception):
        return UNKNOWN
    if found is None and defn.mode is SyncMode.UPDATE:
        return SKIPPED
    if would is _MISSING:
        return KEPT
    if found is None:
        return NEW
    if now is _MISSING:
        return SAME if would is None else NEW
    return SAME if _same(now, would) else CHANGED


def _profile_cells(
    defn: SyncDefinition, mapping: FieldMapping, person: Read, would: Any, fields: dict[str, str] | Exception
) -> tuple[str, str, str]:
    """One field of a profile sync: its value now in Iterable, the change, and the type's verdict."""
    now = person.data_fields.get(mapping.field, _MISSING) if isinstance(person, IterableUser) else _MISSING
    if isinstance(person, Exception):
        now_cell = unknown(person)
    elif person is None:
        now_cell = NOT_IN_ITERABLE
    else:
        now_cell = ABSENT if now is _MISSING else _shown(now, mapping)
    return now_cell, _change(defn, person, now, would), _type_cell(mapping, fields)


def preview_rows(
    client: IterableClient | Exception, defn: SyncDefinition, sample: Sequence[StagedRow]
) -> Preview:
    """One table row per (sampled row, mapped field): the masked identity, the field, its value now in
    Iterable, the value the run would write, the change and whether Iterable's type for it fits.

    ``client`` may be the error that kept the run from building one (no key, a missing block): every
    value Iterable holds is then unknown, with that cause. Custom events have nothing to read back:
    their rows show the event fields that would be sent.
    """
    if not sample:
        return Preview(defn.name, [])  # nothing staged: nothing to read either
    mappings = [defn.fields[column] for column in defn.columns]
    events = defn.kind is SyncKind.CUSTOM_EVENTS
    found: list[Read]
    fields: dict[str, str] | Exception
    if events:
        found, fields = [None] * len(sample), {}
    elif isinstance(client, Exception):
        found, fields = [client] * len(sample), client
    else:
        found, fields = list(_look_up(client, defn, [s.identity for s in sample])), _types(client)
    rows: list[dict[str, str]] = []
    changes: Counter[str] = Counter()
    for staged, person in zip(sample, found, strict=True):
        data = staged.item.get("dataFields", {})
        identity = mask_identity(staged.identity, defn.identity.kind.value)
        for mapping in mappings:
            would = data.get(mapping.field, _MISSING)
            if events:
                now_cell, change, type_cell = EVENT, EVENT_CHANGE, EVENT_TYPE
            else:
                now_cell, change, type_cell = _profile_cells(defn, mapping, person, would, fields)
            changes[change] += 1
            shown_would = NOT_SENT if would is _MISSING else _shown(would, mapping)
            cells = (identity, mapping.field, now_cell, shown_would, change, type_cell)
            rows.append(dict(zip(COLUMNS, cells, strict=True)))
    problems = {
        m.field: problem
        for m in mappings
        if isinstance(fields, dict) and (problem := field_type_problem(m, fields.get(m.field))) is not None
    }
    return Preview(
        defn.name,
        rows,
        sampled=len(sample),
        in_iterable=sum(1 for f in found if isinstance(f, IterableUser)),
        not_in_iterable=0 if events else sum(1 for f in found if f is None),
        unanswered=sum(1 for f in found if isinstance(f, Exception)),
        changes=dict(changes),
        type_problems=problems,
        types_unknown=isinstance(fields, Exception),
    )


def _not_sent(reason: str, rows: int, then: str) -> dict[str, Any]:
    return {"not sent": reason, "rows": rows, "what happens": then}


def rows_it_would_not_send(
    defn: SyncDefinition, plan: ChangeSetSummary, preview: Preview, invalid_key: str
) -> list[dict[str, Any]]:
    """What a real run now would not send, and why (counts only): unchanged rows, people Iterable did
    not know last time, invalid identities, the sampled people update mode would skip, and a whole
    run its start check or ``on_invalid_rows: fail`` would refuse."""
    hours = f"{defn.not_in_iterable_retry_hours:g} h"
    rows = [
        _not_sent("unchanged since the last accepted sync", plan.unchanged, "nothing to send"),
        _not_sent(
            "not in Iterable at the last look, row unchanged",
            plan.not_found_waiting,
            f"looked at again {hours} after that look, or when the row changes",
        ),
        _not_sent("NULL or blank identity", plan.null_identities, f"never sent (listed in {invalid_key})"),
        _not_sent(
            f"identity shared with another row ({plan.duplicate_identities:,} identities)",
            plan.duplicate_rows,
            f"never sent (listed in {invalid_key})",
        ),
    ]
    if preview.not_in_iterable and defn.kind is SyncKind.USER_PROFILES and defn.mode is SyncMode.UPDATE:
        rows.append(
            _not_sent(
                f"not in Iterable now: {preview.not_in_iterable:,} of the {preview.sampled:,} sampled",
                preview.not_in_iterable,
                f"skipped (update mode creates nobody); looked at again after {hours} or on a change",
            )
        )
    if preview.type_problems:
        fields = ", ".join(sorted(preview.type_problems))
        rows.append(
            _not_sent(
                f"every row: Iterable holds {fields} as another type",
                plan.to_send,
                "a real run fails its start check before sending anything (see the preview's type column)",
            )
        )
    if plan.invalid_rows and defn.on_invalid_rows == "fail":
        rows.append(
            _not_sent(
                "every row: on_invalid_rows is fail", plan.to_send, "a real run is refused before any batch"
            )
        )
    return rows
