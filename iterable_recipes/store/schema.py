"""The tables of the app database, as SQLAlchemy Core metadata shared by the store and the migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

OPEN_STATUSES = ("pending", "in_flight", "retry")
STATUSES = (*OPEN_STATUSES, "delivered", "dead", "skipped")
TERMINAL_STATUSES = ("delivered", "dead", "skipped")
OPEN_STATUS_SQL = "status IN ('pending', 'in_flight', 'retry')"
OPEN_KEYED_SQL = f"dedupe_key IS NOT NULL AND {OPEN_STATUS_SQL}"  # the open-dedupe index's rows


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both databases (SQLite keeps no zone, so it stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store UTC; naive input is taken to be UTC already."""
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Always hand back an aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def json_type() -> Any:
    """JSON on SQLite, JSONB on PostgreSQL."""
    return JSON().with_variant(JSONB(), "postgresql")


metadata = MetaData()

received_events = Table(
    "received_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("source", String(32), nullable=False),
    Column("source_id", String(512), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("payload", json_type(), nullable=True),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("last_error", Text, nullable=True),
    Column("lease_owner", String(128), nullable=True),
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    Column("webhook_id", String(256), nullable=True),
    Column("dedupe_key", String(256), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("delivered_at", UTCDateTime(), nullable=True),
    UniqueConstraint("source", "source_id", name="uq_received_events_source_id"),
    UniqueConstraint("webhook_id", name="uq_received_events_webhook_id"),
    CheckConstraint(f"status IN {STATUSES!r}", name="ck_received_events_status"),
    Index("ix_received_events_claim", "source", "status", "next_attempt_at"),
    Index(
        "uq_received_events_open_dedupe",
        "source",
        "dedupe_key",
        unique=True,
        # Keyed items only: a keyless one never collides, and leaving it out spares every webhook's
        # insert a write of this index (migration 0004).
        sqlite_where=text(OPEN_KEYED_SQL),
        postgresql_where=text(OPEN_KEYED_SQL),
    ),
)

cursors = Table(
    "cursors",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

optout_audit = Table(
    "optout_audit",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("source", String(16), nullable=False),
    Column("lead_id", String(64), nullable=False),
    Column("activity_ids", json_type(), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("iterable_response", json_type(), nullable=True),
    # The inbox item and its attempt a record is about (None for what no item carries: an unsubscribe
    # the poll could not resolve): one record per attempt, written "attempting" before the write.
    Column("item_id", BigInteger().with_variant(Integer, "sqlite"), nullable=True),
    Column("attempt", Integer, nullable=True),
    Index("ix_optout_audit_lead", "lead_id", "at"),
    Index("uq_optout_audit_attempt", "item_id", "attempt", unique=True),
)

SUPPRESSION_STATUSES = ("pending", "applied", "lifted")

# The consent ledger: every address someone asked not to be emailed at, recorded with the inbox item
# that carries the request (one transaction), and kept after that item is settled.
suppressions = Table(
    "suppressions",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False),
    Column("subject_id", String(128), nullable=False),
    Column("source", String(32), nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("applied_at", UTCDateTime(), nullable=True),
    Column("checks", Integer, nullable=False, server_default="0"),
    Column("next_check_at", UTCDateTime(), nullable=True),
    UniqueConstraint("email", "subject_id", name="uq_suppressions_email_subject"),
    CheckConstraint(f"status IN {SUPPRESSION_STATUSES!r}", name="ck_suppressions_status"),
    Index("ix_suppressions_email", "email"),
    Index("ix_suppressions_due", "status", "next_check_at"),
)
