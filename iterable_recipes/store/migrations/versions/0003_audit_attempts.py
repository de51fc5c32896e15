"""One opt-out audit record per attempt: the inbox item and attempt each record is about.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add item_id and attempt, unique together (NULLs, records no item carries, never collide)."""
    with op.batch_alter_table("optout_audit") as batch:
        batch.add_column(
            sa.Column("item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True)
        )
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=True))
    op.create_index("uq_optout_audit_attempt", "optout_audit", ["item_id", "attempt"], unique=True)


def downgrade() -> None:
    """Drop the per-attempt columns."""
    op.drop_index("uq_optout_audit_attempt", table_name="optout_audit")
    with op.batch_alter_table("optout_audit") as batch:
        batch.drop_column("attempt")
        batch.drop_column("item_id")
