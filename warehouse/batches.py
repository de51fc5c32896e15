"""Read a planned run's batches: the staging table joined back to the model, streamed with fetchmany."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from config.sync_definitions import IdentityKind, SyncDefinition, SyncKind, SyncMode
from warehouse import state
from warehouse.convert import convert
from warehouse.sql import identity_expr, source_subquery


@dataclass
class Batch:
    """One batch of the change set, ready for users/bulkUpdate (or events/trackBulk).

    ``items``, ``identities``, ``hashes`` and ``reasons`` are aligned by position. Pass the batch
    number and Iterable's per-identity outcome to ``accept_batch``.
    """

    batch_no: int
    items: list[dict[str, Any]] = field(default_factory=list)
    identities: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)


def event_id(defn: SyncDefinition, identity: str, row_hash: str) -> str:
    """A stable event id from the sync, the identity and the row hash: a re-send updates the same event.

    Hex only (letters and digits, 64 bytes), and it reveals no email address.
    """
    return hashlib.sha256(f"{defn.name}|{identity}|{row_hash}".encode()).hexdigest()


def build_item(defn: SyncDefinition, identity: str, row_hash: str, values: dict[str, Any]) -> dict[str, Any]:
    """The Iterable request item for one row: identity key, ``dataFields`` converted per mapping."""
    data: dict[str, Any] = {}
    for column, mapping in defn.fields.items():
        value = convert(values.get(column), mapping.type)
        if value is not None or mapping.send_nulls:
            data[mapping.field] = value
    key = defn.identity.kind.value  # "email" or "userId", as Iterable names them
    item: dict[str, Any] = {key: identity}
    if defn.kind is SyncKind.CUSTOM_EVENTS:
        item |= {"eventName": defn.event_name, "id": event_id(defn, identity, row_hash), "dataFields": data}
        return item
    item["dataFields"] = data
    if defn.identity.kind is IdentityKind.USER_ID:
        # false never creates a user for an unknown userId: update mode must not create anyone.
        item["preferUserId"] = defn.mode is SyncMode.UPSERT
    if defn.merge_nested_objects:
        item["mergeNestedObjects"] = True
    return item


def batch_query(defn: SyncDefinition, run_id: str, state_schema: str | None = None) -> str:
    """The one query that streams a run's change set with the mapped columns, in batch order."""
    stage = state.stage_table(state_schema, run_id)
    picked = ", ".join(f"M.{column} AS F{i}" for i, column in enumerate(defn.columns))
    aliases = ", ".join(f"X.F{i}" for i in range(len(defn.columns)))
    return f"""SELECT S.BATCH_NO, S.IDENTITY, S.ROW_HASH, S.REASON, {aliases}
        FROM {stage} S
        JOIN (SELECT {identity_expr(defn)} AS XID, {picked} FROM {source_subquery(defn)}) X
          ON X.XID = S.IDENTITY
        ORDER BY S.BATCH_NO, S.IDENTITY"""


def iter_batches(
    conn: Any,
    defn: SyncDefinition,
    run_id: str,
    *,
    state_schema: str | None = None,
    fetch_size: int = 10_000,
) -> Iterator[Batch]:
    """Yield the planned run's batches in order, reading rows with ``fetchmany`` (never the whole model).

    If the model gained a duplicate of a staged identity since planning, only the first row is sent.
    A row that changed since planning is sent as it is now; its staged hash is what gets accepted,
    so the next plan sees the difference and sends it again (at least once, never lost).
    """
    columns = defn.columns
    cur = conn.cursor()
    try:
        cur.execute(batch_query(defn, run_id, state_schema))
        current: Batch | None = None
        last_identity: str | None = None
        while rows := cur.fetchmany(fetch_size):
            for row in rows:
                batch_no, identity, row_hash, reason = int(row[0]), row[1], row[2], row[3]
                if identity == last_identity:
                    continue
                last_identity = identity
                if current is None or current.batch_no != batch_no:
                    if current is not None:
                        yield current
                    current = Batch(batch_no)
                values = dict(zip(columns, row[4:], strict=True))
                current.items.append(build_item(defn, identity, row_hash, values))
                current.identities.append(identity)
                current.hashes.append(row_hash)
                current.reasons.append(reason)
        if current is not None:
            yield current
    finally:
        cur.close()
