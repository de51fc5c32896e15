"""Initial schema: received events, cursors, opt-out audit.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

OPEN = "status IN ('pending', 'in_flight', 'retry')"


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(JSONB(), "postgresql")


def _id() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the three tables and their indexes."""
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "received_events",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("source_id", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", _json(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", ts, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", ts, nullable=True),
        sa.Column("webhook_id", sa.String(256), nullable=True),
        sa.Column("dedupe_key", sa.String(256), nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("delivered_at", ts, nullable=True),
        sa.UniqueConstraint("source", "source_id", name="uq_received_events_source_id"),
        sa.UniqueConstraint("webhook_id", name="uq_received_events_webhook_id"),
        sa.CheckConstraint(
            "status IN ('pending', 'in_flight', 'retry', 'delivered', 'dead', 'skipped')",
            name="ck_received_events_status",
        ),
    )
    op.create_index("ix_received_events_claim", "received_events", ["source", "status", "next_attempt_at"])
    op.create_index(
        "uq_received_events_open_dedupe",
        "received_events",
        ["source", "dedupe_key"],
        unique=True,
        sqlite_where=sa.text(OPEN),
        postgresql_where=sa.text(OPEN),
    )
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", ts, nullable=False),
    )
    op.create_table(
        "optout_audit",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("lead_id", sa.String(64), nullable=False),
        sa.Column("activity_ids", _json(), nullable=False),
        sa.Column("at", ts, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("iterable_response", _json(), nullable=True),
    )
    op.create_index("ix_optout_audit_lead", "optout_audit", ["lead_id", "at"])


def downgrade() -> None:
    """Drop everything upgrade created."""
    op.drop_table("optout_audit")
    op.drop_table("cursors")
    op.drop_index("uq_received_events_open_dedupe", table_name="received_events")
    op.drop_index("ix_received_events_claim", table_name="received_events")
    op.drop_table("received_events")
