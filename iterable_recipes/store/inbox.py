"""The inbox API: add received events once, claim them with a lease, record outcomes, operate on them.

Delivery is at least once: an item is claimed with a lease, and an item whose lease ran out (its drain
was killed) is claimed again. Only the drain holding an item's lease settles it, and a drain that ends
without settling gives its leases back. Every state change is committed before the call returns.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    and_,
    case,
    func,
    null,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from iterable_recipes.masking import mask_emails
from iterable_recipes.store.db import make_engine, utcnow
from iterable_recipes.store.ledger import Suppression, SuppressionLedger
from iterable_recipes.store.payload import EncodedJSON, encode_payload
from iterable_recipes.store.schema import (
    OPEN_STATUSES,
    TERMINAL_STATUSES,
    cursors,
    optout_audit,
    received_events,
)

Status = Literal["pending", "in_flight", "retry", "delivered", "dead", "skipped"]
# "unresolved": the poll found an unsubscribe whose lead it could not turn into an address.
AuditOutcome = Literal[
    "attempting", "opted_out", "not_in_iterable", "already_opted_out", "failed", "unresolved", "skipped"
]
MAX_REASON_CHARS = 2000
LEASE_EXPIRED_EVERY_TIME = "lease expired on every attempt"
ADD_CHUNK = 500  # rows per INSERT: well under SQLite's 32,766 bound parameters
# The columns intake sets, in the order _add_chunk binds them (delivered_at and the lease stay NULL).
ADD_COLUMNS = (
    "source", "source_id", "kind", "payload", "status", "attempts", "next_attempt_at", "last_error",
    "webhook_id", "dedupe_key", "created_at", "updated_at",
)  # fmt: skip
SCAN_CHUNK = 1000  # rows read at a time when matching payload values in Python
T = received_events


@dataclass(frozen=True)
class AddResult:
    """The stored item's id, and whether this call created it (False: it was already there)."""

    id: int
    created: bool


@dataclass(frozen=True)
class NewItem:
    """One event to add; ``status`` is "pending", or "skipped" for events kept but never forwarded."""

    source: str
    source_id: str
    kind: str
    # A mapping (encoded once, with orjson), or JSON text the caller already holds, stored as is.
    payload: Mapping[str, Any] | EncodedJSON
    webhook_id: str | None = None
    dedupe_key: str | None = None
    status: Literal["pending", "skipped"] = "pending"
    reason: str | None = None
    # A request not to be emailed that this item carries: recorded in the ledger in the same transaction.
    suppression: Suppression | None = None
    # Not due before this many seconds (something it depends on is known to land a little later).
    delay_seconds: float = 0.0


@dataclass(frozen=True)
class Item:
    """A stored event as the drains and operators see it; ``payload`` is None once purged."""

    id: int
    source: str
    source_id: str
    kind: str
    payload: dict[str, Any] | None
    status: Status
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    webhook_id: str | None
    dedupe_key: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Item:
        """Build from a row of received_events."""
        if getattr(row, "_fields", None) == ITEM_FIELDS:
            # A whole row (select(T), RETURNING every column): its columns are the fields, in order.
            # A claim builds a thousand at a time, and this is a few times cheaper than by name.
            return cls(*row)
        return cls(**{name: getattr(row, name) for name in ITEM_FIELDS})


ITEM_FIELDS = tuple(Item.__dataclass_fields__)


@dataclass(frozen=True)
class AuditRecord:
    """One opt-out decision: what triggered it, for which lead, and what Iterable answered."""

    id: int
    source: Literal["webhook", "poll", "ledger"]
    lead_id: str
    activity_ids: list[str]
    at: datetime
    outcome: AuditOutcome
    iterable_response: Any
    item_id: int | None = None
    attempt: int | None = None


@dataclass(frozen=True)
class Outcome:
    """What a drain records for one item it claimed: delivered, retry (after ``delay``), dead or skipped."""

    item_id: int
    status: Literal["delivered", "retry", "dead", "skipped", "hold"]
    reason: str = ""
    delay: float | None = None


@dataclass
class Settled:
    """What ``Inbox.settle`` wrote: counts per status, "refused" for outcomes not written (the item was
    no longer the drain's: its lease ran out and another drain took it), and the items that died."""

    counts: dict[str, int] = field(
        default_factory=lambda: {"delivered": 0, "retry": 0, "dead": 0, "skipped": 0, "held": 0, "refused": 0}
    )
    dead: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Released:
    """What ``Inbox.release`` gave back: ids due again at once, and (source, id) of items that were on
    their last attempt, now dead."""

    retry: list[int]
    dead: list[tuple[str, int]]


def _reason(reason: str | None) -> str | None:
    return None if reason is None else reason[:MAX_REASON_CHARS]


class Inbox:
    """The app database's store. Thread-safe; share one per process (it owns a connection pool)."""

    def __init__(
        self,
        url_or_engine: str | Engine,
        *,
        max_attempts: int = 20,
        backoff_base_seconds: float = 15.0,
        backoff_cap_seconds: float = 3600.0,
        sqlite_synchronous: str = "FULL",
    ) -> None:
        if isinstance(url_or_engine, str):
            self.engine = make_engine(url_or_engine, sqlite_synchronous=sqlite_synchronous)
        else:
            self.engine = url_or_engine
        self.max_attempts = max_attempts
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_cap_seconds = backoff_cap_seconds
        dialect = self.engine.dialect.name
        if dialect not in {"sqlite", "postgresql"}:
            raise ValueError(f"unsupported database dialect {dialect!r}: use SQLite or PostgreSQL")
        self.ledger = SuppressionLedger(self.engine)
        # Intake writes its rows at the driver (the receiver's hot path: SQLAlchemy's per-row parameter
        # processing cost more than the insert). Its timestamps go through the column type's own
        # processor, once per batch, so they are stored exactly as SQLAlchemy stores them elsewhere.
        stamp_type = T.c.created_at.type.dialect_impl(self.engine.dialect)
        self._stamp = stamp_type.bind_processor(self.engine.dialect)
        self._insert_sql: dict[int, str] = {}

    @property
    def is_sqlite(self) -> bool:
        """True on SQLite (one writer at a time), False on PostgreSQL."""
        return self.engine.dialect.name == "sqlite"

    def dispose(self) -> None:
        """Close the pool's connections."""
        self.engine.dispose()

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    # intake

    def add(
        self,
        source: str,
        source_id: str,
        kind: str,
        payload: Mapping[str, Any],
        webhook_id: str | None = None,
        dedupe_key: str | None = None,
        *,
        status: Literal["pending", "skipped"] = "pending",
        reason: str | None = None,
    ) -> AddResult:
        """Store one event once: a repeat (same source id, same webhook id, or same dedupe key among
        open items) stores nothing and returns the existing id with ``created=False``."""
        item = NewItem(source, source_id, kind, payload, webhook_id, dedupe_key, status, reason)
        return self.add_many([item])[0]

    def add_many(self, items: Sequence[NewItem], conn: Connection | None = None) -> list[AddResult]:
        """Store several events in one transaction (group commit); results are in the input's order.

        ``conn``: a connection the caller keeps (outside any transaction) to commit on, instead of one
        checked out of the pool for this call.
        """
        if not items:
            return []
        if conn is None:
            with self.engine.begin() as own:
                return self._add_all(own, items)
        with conn.begin():
            return self._add_all(conn, items)

    def _add_all(self, conn: Connection, items: Sequence[NewItem]) -> list[AddResult]:
        """The inserts of ``add_many`` inside the caller's transaction on ``conn``."""
        now = utcnow()
        results: list[AddResult] = []
        for start in range(0, len(items), ADD_CHUNK):
            results.extend(self._add_chunk(conn, items[start : start + ADD_CHUNK], now))
        # Repeats too: a suppression is recorded whatever became of the item that first carried it.
        self.ledger.record(conn, [i.suppression for i in items if i.suppression is not None], now)
        return results

    def _add_chunk(self, conn: Connection, items: Sequence[NewItem], now: datetime) -> list[AddResult]:
        """One multi-row INSERT ... ON CONFLICT DO NOTHING; repeats are then looked up one by one."""
        stamp = self._stamp(now) if self._stamp else now
        params: list[Any] = []
        for item in items:
            due = stamp
            if item.delay_seconds:
                due = now + timedelta(seconds=item.delay_seconds)
                due = self._stamp(due) if self._stamp else due
            params += (
                item.source,
                item.source_id,
                item.kind,
                encode_payload(item.payload),
                item.status,
                0,
                due,
                _reason(item.reason),
                item.webhook_id,
                item.dedupe_key,
                stamp,
                stamp,
            )
        # The DBAPI cursor of the transaction's own connection: SQLAlchemy's execution context and
        # result rows cost as much per batch as the insert itself.
        cursor = conn.connection.cursor()
        try:
            cursor.execute(self._insert(len(items)), params)
            inserted = {(source, source_id): int(id_) for id_, source, source_id in cursor.fetchall()}
        finally:
            cursor.close()
        results = []
        for item in items:
            new_id = inserted.pop((item.source, item.source_id), None)
            if new_id is not None:
                results.append(AddResult(new_id, True))
            else:
                results.append(AddResult(self._existing_id(conn, item), False))
        return results

    def _insert(self, rows: int) -> str:
        """The driver's INSERT of ``rows`` items (made once per row count): every column intake sets, the
        payload as JSON text (cast to JSONB on PostgreSQL), repeats skipped, the new rows returned."""
        sql = self._insert_sql.get(rows)
        if sql is None:
            mark = "?" if self.is_sqlite else "%s"
            marks = [f"{mark}::jsonb" if c == "payload" and not self.is_sqlite else mark for c in ADD_COLUMNS]
            one = f"({', '.join(marks)})"
            sql = (
                f"INSERT INTO {T.name} ({', '.join(ADD_COLUMNS)}) VALUES {', '.join([one] * rows)} "
                "ON CONFLICT DO NOTHING RETURNING id, source, source_id"
            )
            self._insert_sql[rows] = sql
        return sql

    def _existing_id(self, conn: Connection, item: NewItem) -> int:
        """The id of the stored item that made ``item`` a repeat."""
        conditions: list[ColumnElement[bool]] = [
            and_(T.c.source == item.source, T.c.source_id == item.source_id)
        ]
        if item.webhook_id is not None:
            conditions.insert(0, T.c.webhook_id == item.webhook_id)
        if item.dedupe_key is not None:
            conditions.append(
                and_(
                    T.c.source == item.source,
                    T.c.dedupe_key == item.dedupe_key,
                    T.c.status.in_(OPEN_STATUSES),
                )
            )
        for condition in conditions:
            found = conn.execute(select(T.c.id).where(condition).limit(1)).scalar()
            if found is not None:
                return int(found)
        # The conflicting row changed between insert and look-up (an open duplicate just closed).
        raise RuntimeError("inbox: conflicting item vanished during add; try again")

    # drains

    def bury_expired(self, source: str) -> list[int]:
        """Mark dead the in-flight items of ``source`` whose lease ran out on their last attempt; returns
        their ids, for the caller to announce. Call it before ``claim``, which would lease them again.

        Such an item killed its drain (or its drain's process) every time it was taken: stop retrying it.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            return list(
                conn.execute(
                    update(T)
                    .where(
                        T.c.source == source,
                        T.c.status == "in_flight",
                        T.c.lease_expires_at <= now,
                        T.c.attempts >= self.max_attempts,
                    )
                    .values(status="dead", last_error=LEASE_EXPIRED_EVERY_TIME, updated_at=now)
                    .returning(T.c.id)
                ).scalars()
            )

    def claim(
        self, source: str, limit: int = 100, lease_seconds: float = 300, owner: str | None = None
    ) -> list[Item]:
        """Lease up to ``limit`` due items of ``source`` to ``owner``: pending or retry items whose time
        has come, and in-flight items whose lease ran out. Each claim counts as an attempt; an item past
        its last attempt is left for ``bury_expired``, never leased again."""
        owner = owner or f"claimer-{uuid.uuid4().hex[:12]}"
        now = utcnow()
        due = and_(
            T.c.source == source,
            or_(
                and_(T.c.status.in_(("pending", "retry")), T.c.next_attempt_at <= now),
                and_(
                    T.c.status == "in_flight",
                    T.c.lease_expires_at <= now,
                    T.c.attempts < self.max_attempts,
                ),
            ),
        )
        values = {
            "status": "in_flight",
            "attempts": T.c.attempts + 1,
            "lease_owner": owner,
            "lease_expires_at": now + timedelta(seconds=lease_seconds),
            "updated_at": now,
        }
        with self.engine.begin() as conn:
            picked = select(T.c.id).where(due).order_by(T.c.next_attempt_at, T.c.id).limit(limit)
            if self.is_sqlite:
                # One statement inside BEGIN IMMEDIATE: no other writer can interleave.
                picked = self._due_by_index(source, now, limit)
                stmt = update(T).where(T.c.id.in_(picked.scalar_subquery())).values(values).returning(*T.c)
                rows = conn.execute(stmt).all()
            else:
                ids = conn.execute(picked.with_for_update(skip_locked=True)).scalars().all()
                if not ids:
                    return []
                rows = conn.execute(update(T).where(T.c.id.in_(ids)).values(values).returning(*T.c)).all()
        return sorted((Item.from_row(r) for r in rows), key=lambda i: (i.next_attempt_at, i.id))

    def has_due(self, source: str) -> bool:
        """Whether a drain of ``source`` would find work now: an item ``claim`` would lease, or one
        ``bury_expired`` would bury (its drain must run to announce it). One indexed EXISTS per status,
        cheap enough to ask every few seconds."""
        now = utcnow()
        branches = (
            and_(T.c.status == "pending", T.c.next_attempt_at <= now),
            and_(T.c.status == "retry", T.c.next_attempt_at <= now),
            and_(T.c.status == "in_flight", T.c.lease_expires_at <= now),
        )
        with self.engine.connect() as conn:
            return any(
                conn.execute(select(select(T.c.id).where(T.c.source == source, due).exists())).scalar()
                for due in branches
            )

    def due_count(self, source: str) -> int:
        """How many items of ``source`` are due now (what a drain still has to take; for its progress)."""
        now = utcnow()
        due = or_(
            and_(T.c.status.in_(("pending", "retry")), T.c.next_attempt_at <= now),
            and_(T.c.status == "in_flight", T.c.lease_expires_at <= now),
        )
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(T.c.source == source, due)).scalar() or 0)

    def _due_by_index(self, source: str, now: datetime, limit: int) -> Select[tuple[int]]:
        """The first ``limit`` due ids, one index-ordered branch per status (SQLite).

        With the statuses OR-ed in one WHERE, SQLite sorts every due row to find the first ``limit``:
        a claim on a 100,000-item backlog then costs a full sort each batch.
        """
        # An expired lease on its last attempt is bury_expired's, never leased again.
        not_spent = T.c.attempts < self.max_attempts
        branches = [
            select(T.c.id, T.c.next_attempt_at)
            .where(T.c.source == source, T.c.status == status, moment <= now, *extra)
            .order_by(T.c.next_attempt_at, T.c.id)
            .limit(limit)
            .subquery()
            for status, moment, extra in (
                ("pending", T.c.next_attempt_at, ()),
                ("retry", T.c.next_attempt_at, ()),
                ("in_flight", T.c.lease_expires_at, (not_spent,)),
            )
        ]
        due = union_all(*(select(b.c.id, b.c.next_attempt_at) for b in branches)).subquery()
        return select(due.c.id).order_by(due.c.next_attempt_at, due.c.id).limit(limit)

    def next_pending_at(self, source: str) -> datetime | None:
        """When the first pending item of ``source`` not due yet will be (only items added with a delay
        wait so), or None: a drain may wait for it instead of leaving it to the next run."""
        now = utcnow()
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.min(T.c.next_attempt_at)).where(
                    T.c.source == source, T.c.status == "pending", T.c.next_attempt_at > now
                )
            ).scalar()

    @staticmethod
    def _held(ids: Iterable[int], owner: str) -> ColumnElement[bool]:
        """The given items still in flight for ``owner``: a drain whose lease ran out must not overwrite
        the state set by the drain that took over, nor settle an item it never claimed."""
        return and_(T.c.id.in_(list(ids)), T.c.lease_owner == owner, T.c.status == "in_flight")

    def mark_delivered(self, ids: Iterable[int], *, owner: str) -> int:
        """Record delivery of the ``ids`` ``owner`` holds; returns how many rows changed."""
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                update(T)
                .where(self._held(ids, owner))
                .values(
                    status="delivered",
                    delivered_at=now,
                    updated_at=now,
                    last_error=None,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
        return int(result.rowcount)

    def settle(self, outcomes: Sequence[Outcome], owner: str) -> Settled:
        """Write each outcome, only for items ``owner`` still holds (the rest are counted as refused);
        reasons are masked on the way in.

        Every write is conditional on the item's state, so settling the same list again after a failure
        is safe. A retry past the item's last attempt is recorded dead (and listed as such).
        """
        settled = Settled()
        delivered = [o.item_id for o in outcomes if o.status == "delivered"]
        if delivered:
            settled.counts["delivered"] = self.mark_delivered(delivered, owner=owner)
            settled.counts["refused"] += len(delivered) - settled.counts["delivered"]
        for outcome in outcomes:
            reason = mask_emails(outcome.reason)
            written: str | None = None
            if outcome.status == "retry":
                written = self.mark_retry(outcome.item_id, reason, delay=outcome.delay, owner=owner)
            elif outcome.status == "hold":
                held = self.mark_held(outcome.item_id, reason, outcome.delay or 0.0, owner=owner)
                written = "held" if held else None
            elif outcome.status == "dead":
                written = "dead" if self.mark_dead(outcome.item_id, reason, owner=owner) else None
            elif outcome.status == "skipped":
                written = "skipped" if self.mark_skipped(outcome.item_id, reason, owner=owner) else None
            else:
                continue
            settled.counts[written or "refused"] += 1
            if written == "dead":
                settled.dead.append((outcome.item_id, reason))
        return settled

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts: exponential, capped."""
        exponent = max(attempts - 1, 0)
        return float(min(self.backoff_cap_seconds, self.backoff_base_seconds * 2 ** min(exponent, 30)))

    def mark_retry(self, id: int, reason: str, delay: float | None = None, *, owner: str) -> Status | None:
        """Schedule another attempt after ``delay`` seconds (default: the backoff for its attempts);
        after max attempts the item is dead instead. Returns the new status, or None when ``owner`` does
        not hold the item in flight (another drain took it over)."""
        now = utcnow()
        with self.engine.begin() as conn:
            attempts = conn.execute(select(T.c.attempts).where(self._held([id], owner))).scalar()
            if attempts is None:
                return None
            if attempts >= self.max_attempts:
                status: Status = "dead"
                values: dict[str, Any] = {
                    "last_error": _reason(f"max attempts ({attempts}) reached: {reason}")
                }
            else:
                status = "retry"
                wait = self.backoff(attempts) if delay is None else delay
                values = {"last_error": _reason(reason), "next_attempt_at": now + timedelta(seconds=wait)}
            conn.execute(
                update(T)
                .where(self._held([id], owner))
                .values(status=status, updated_at=now, lease_owner=None, lease_expires_at=None, **values)
            )
        return status

    def mark_held(self, id: int, reason: str, delay: float, *, owner: str) -> bool:
        """Put the item back for ``delay`` seconds without spending the attempt its claim counted (it
        waits for something else, such as a consent check, not for a failure to clear)."""
        return self._finish(
            id,
            "retry",
            reason,
            owner,
            attempts=case((T.c.attempts > 0, T.c.attempts - 1), else_=0),
            next_attempt_at=utcnow() + timedelta(seconds=delay),
        )

    def _finish(self, id: int, status: Status, reason: str, owner: str, **values: Any) -> bool:
        """Settle one item ``owner`` still holds, its lease given up; ``values`` are further columns."""
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                update(T)
                .where(self._held([id], owner))
                .values(
                    status=status,
                    last_error=_reason(reason),
                    updated_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    **values,
                )
            )
        return bool(result.rowcount)

    def mark_dead(self, id: int, reason: str, *, owner: str) -> bool:
        """Record a permanent failure with its reason (never retried until an operator says so); False
        when ``owner`` does not hold the item in flight."""
        return self._finish(id, "dead", reason, owner)

    def mark_skipped(self, id: int, reason: str, *, owner: str) -> bool:
        """Record that the item needs no delivery (for example, a person not in Iterable); False when
        ``owner`` does not hold the item in flight."""
        return self._finish(id, "skipped", reason, owner)

    def release(self, owner: str, reason: str) -> Released:
        """Give back every item ``owner`` holds in flight (its run ended without settling them): due again
        at once. The claim's attempt stays counted, so an item on its last attempt is dead instead, as it
        would be had its lease run out."""
        now = utcnow()
        held = and_(T.c.lease_owner == owner, T.c.status == "in_flight")
        cleared = {"updated_at": now, "lease_owner": None, "lease_expires_at": None}
        with self.engine.begin() as conn:
            dead = conn.execute(
                update(T)
                .where(held, T.c.attempts >= self.max_attempts)
                .values(
                    status="dead",
                    last_error=_reason(f"max attempts ({self.max_attempts}) reached: {reason}"),
                    **cleared,
                )
                .returning(T.c.source, T.c.id)
            ).all()
            retry = conn.execute(
                update(T)
                .where(held)
                .values(status="retry", next_attempt_at=now, last_error=_reason(reason), **cleared)
                .returning(T.c.id)
            ).scalars()
            return Released(sorted(retry), sorted((str(s), int(i)) for s, i in dead))

    def lease_holders(self, source: str) -> list[str]:
        """The owners holding items of ``source`` in flight, sorted."""
        stmt = (
            select(T.c.lease_owner)
            .where(T.c.source == source, T.c.status == "in_flight", T.c.lease_owner.is_not(None))
            .distinct()
        )
        with self.engine.connect() as conn:
            return sorted(str(owner) for owner in conn.execute(stmt).scalars())

    # operators

    def get(self, id: int) -> Item | None:
        """One item by id, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(T).where(T.c.id == id)).first()
        return None if row is None else Item.from_row(row)

    def get_many(self, ids: Iterable[int]) -> dict[int, Item]:
        """Items by id (the ones that exist), in one read."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(T).where(T.c.id.in_(wanted)))
            return {row.id: Item.from_row(row) for row in rows}

    def list_items(
        self, status: Status | None = None, source: str | None = None, limit: int = 100
    ) -> list[Item]:
        """Items, newest first, optionally of one status and source."""
        stmt = select(T).order_by(T.c.id.desc()).limit(limit)
        if status is not None:
            stmt = stmt.where(T.c.status == status)
        if source is not None:
            stmt = stmt.where(T.c.source == source)
        with self.engine.connect() as conn:
            return [Item.from_row(r) for r in conn.execute(stmt)]

    def find_by_payload(
        self, paths: Sequence[tuple[str, ...]], matches: Callable[[str], bool], limit: int = 100
    ) -> list[Item]:
        """Items, newest first, whose payload holds at one of ``paths`` a string ``matches`` accepts.

        Only the values at ``paths`` are read (not whole payloads), a chunk at a time, and compared in
        Python: the caller's rule (the Unicode email normalisation, say) is one SQL cannot state the same
        way on SQLite and PostgreSQL.
        """
        value = func.coalesce(*(T.c.payload[path].as_string() for path in paths))
        stmt = select(T.c.id, value).where(value.is_not(None)).order_by(T.c.id.desc())
        found: list[int] = []
        with self.engine.connect() as conn:
            for id_, held in conn.execution_options(yield_per=SCAN_CHUNK).execute(stmt):
                if isinstance(held, str) and matches(held):
                    found.append(id_)
                    if len(found) >= limit:
                        break
            if not found:
                return []
            rows = conn.execute(select(T).where(T.c.id.in_(found)).order_by(T.c.id.desc()))
            return [Item.from_row(r) for r in rows]

    def counts(self, source: str | None = None) -> dict[str, dict[str, int]]:
        """Items per source and status: ``{"customersdot": {"pending": 3, ...}}``."""
        stmt = select(T.c.source, T.c.status, func.count()).group_by(T.c.source, T.c.status)
        if source is not None:
            stmt = stmt.where(T.c.source == source)
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for src, status, n in conn.execute(stmt):
                out.setdefault(src, {})[status] = int(n)
        return out

    def _reopen(self, conn: Connection, rows: Sequence[Any], now: datetime) -> int:
        """Make the given closed items pending now, except where the same dedupe key is already open."""
        open_keys = {
            (s, k)
            for s, k in conn.execute(
                select(T.c.source, T.c.dedupe_key).where(
                    T.c.status.in_(OPEN_STATUSES), T.c.dedupe_key.is_not(None)
                )
            )
        }
        ids = []
        for row in rows:
            key = (row.source, row.dedupe_key)
            if row.dedupe_key is not None:
                if key in open_keys:
                    continue
                open_keys.add(key)
            ids.append(row.id)
        if not ids:
            return 0
        conn.execute(
            update(T)
            .where(T.c.id.in_(ids))
            .values(
                status="pending",
                attempts=0,
                next_attempt_at=now,
                updated_at=now,
                delivered_at=None,
                lease_owner=None,
                lease_expires_at=None,
            )
        )
        return len(ids)

    def retry(self, id: int) -> bool:
        """Make one dead, skipped or retrying item pending now; False if it is not in such a state (or its
        dedupe key is already waiting in another item)."""
        now = utcnow()
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(T.c.id, T.c.source, T.c.dedupe_key).where(
                    T.c.id == id, T.c.status.in_(("dead", "skipped", "retry"))
                )
            ).all()
            return bool(rows) and self._reopen(conn, rows, now) == 1

    def retry_dead(self, source: str | None = None) -> int:
        """Make every dead item (of ``source``) pending now; returns how many."""
        now = utcnow()
        stmt = select(T.c.id, T.c.source, T.c.dedupe_key).where(T.c.status == "dead").order_by(T.c.id.desc())
        if source is not None:
            stmt = stmt.where(T.c.source == source)
        with self.engine.begin() as conn:
            return self._reopen(conn, conn.execute(stmt).all(), now)

    def replay(self, source: str, since: datetime) -> int:
        """Send again the items of ``source`` delivered since ``since``: delivered -> pending, same ids and
        source ids (so Iterable updates instead of duplicating). Purged items cannot be replayed."""
        now = utcnow()
        stmt = (
            select(T.c.id, T.c.source, T.c.dedupe_key)
            .where(
                T.c.source == source,
                T.c.status == "delivered",
                T.c.delivered_at >= since,
                T.c.payload.is_not(None),
            )
            .order_by(T.c.id.desc())
        )
        with self.engine.begin() as conn:
            return self._reopen(conn, conn.execute(stmt).all(), now)

    def purge(self, older_than: timedelta) -> int:
        """Drop the payloads (personal data) of finished items last changed before ``older_than`` ago;
        rows stay so repeats are still recognised. Returns how many payloads were dropped."""
        cutoff = utcnow() - older_than
        with self.engine.begin() as conn:
            result = conn.execute(
                update(T)
                .where(T.c.status.in_(TERMINAL_STATUSES), T.c.updated_at < cutoff, T.c.payload.is_not(None))
                # null(): a plain None would store JSON 'null', which IS NOT NULL still matches.
                .values(payload=null())
            )
        return int(result.rowcount)

    # Marketo poll cursor

    def get_cursor(self, name: str) -> str | None:
        """The stored value of cursor ``name``, or None when never set."""
        with self.engine.connect() as conn:
            return conn.execute(select(cursors.c.value).where(cursors.c.name == name)).scalar()

    def set_cursor(self, name: str, value: str) -> None:
        """Store cursor ``name`` (call only after the work up to it is committed)."""
        now = utcnow()
        insert = (sqlite.insert if self.is_sqlite else postgresql.insert)(cursors)
        stmt = insert.values(name=name, value=value, updated_at=now).on_conflict_do_update(
            index_elements=[cursors.c.name], set_={"value": value, "updated_at": now}
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    # opt-out audit

    def add_audit(
        self,
        source: Literal["webhook", "poll", "ledger"],
        lead_id: str | int,
        activity_ids: Sequence[str | int],
        outcome: AuditOutcome,
        iterable_response: Any = None,
        at: datetime | None = None,
    ) -> int:
        """Record one opt-out decision; returns its id."""
        with self.engine.begin() as conn:
            new_id = conn.execute(
                optout_audit.insert()
                .values(
                    source=source,
                    lead_id=str(lead_id),
                    activity_ids=[str(a) for a in activity_ids],
                    at=at or utcnow(),
                    outcome=outcome,
                    iterable_response=iterable_response,
                )
                .returning(optout_audit.c.id)
            ).scalar_one()
        return int(new_id)

    def begin_attempts(self, attempts: Sequence[tuple[Item, Literal["webhook", "poll", "ledger"]]]) -> None:
        """Record "attempting" for each item's current attempt, before anything is written to Iterable;
        a record of the same item and attempt already there is kept (a task retried, a run resumed)."""
        if not attempts:
            return
        now = utcnow()
        insert = (sqlite.insert if self.is_sqlite else postgresql.insert)(optout_audit)
        rows = [
            {
                "source": source,
                "lead_id": str((item.payload or {}).get("leadId", "")),
                "activity_ids": [str(a) for a in (item.payload or {}).get("activityIds", [])],
                "at": now,
                "outcome": "attempting",
                "iterable_response": None,
                "item_id": item.id,
                "attempt": item.attempts,
            }
            for item, source in attempts
        ]
        with self.engine.begin() as conn:
            conn.execute(insert.on_conflict_do_nothing(index_elements=["item_id", "attempt"]), rows)

    def finish_attempt(self, item: Item, outcome: AuditOutcome, iterable_response: Any) -> bool:
        """Finalise the record of ``item``'s current attempt with what happened (idempotent); False when
        no record of that attempt was begun."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(optout_audit)
                .where(optout_audit.c.item_id == item.id, optout_audit.c.attempt == item.attempts)
                .values(outcome=outcome, iterable_response=iterable_response, at=utcnow())
            )
        return bool(result.rowcount)

    def audit_count(self, outcome: AuditOutcome) -> int:
        """How many audit records have ``outcome`` (``unresolved``: unsubscribes nobody could act on)."""
        with self.engine.connect() as conn:
            stmt = select(func.count()).select_from(optout_audit).where(optout_audit.c.outcome == outcome)
            return int(conn.execute(stmt).scalar() or 0)

    def list_audit(self, lead_id: str | int | None = None, limit: int = 100) -> list[AuditRecord]:
        """Audit records, newest first, optionally of one lead."""
        stmt = select(optout_audit).order_by(optout_audit.c.id.desc()).limit(limit)
        if lead_id is not None:
            stmt = stmt.where(optout_audit.c.lead_id == str(lead_id))
        with self.engine.connect() as conn:
            return [
                AuditRecord(
                    id=r.id,
                    source=r.source,
                    lead_id=r.lead_id,
                    activity_ids=list(r.activity_ids),
                    at=r.at,
                    outcome=r.outcome,
                    iterable_response=r.iterable_response,
                    item_id=r.item_id,
                    attempt=r.attempt,
                )
                for r in conn.execute(stmt)
            ]
