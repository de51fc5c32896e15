"""The consent ledger: one row per address and subject (a Marketo lead) that asked not to be emailed.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the suppressions table and its indexes."""
    op.create_table(
        "suppressions",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("subject_id", sa.String(128), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checks", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("email", "subject_id", name="uq_suppressions_email_subject"),
        sa.CheckConstraint("status IN ('pending', 'applied', 'lifted')", name="ck_suppressions_status"),
    )
    op.create_index("ix_suppressions_email", "suppressions", ["email"])
    op.create_index("ix_suppressions_due", "suppressions", ["status", "next_check_at"])


def downgrade() -> None:
    """Drop the suppressions table."""
    op.drop_index("ix_suppressions_due", table_name="suppressions")
    op.drop_index("ix_suppressions_email", table_name="suppressions")
    op.drop_table("suppressions")
