"""The open-dedupe index holds keyed items only: an item without a dedupe key never collides in it, and
every webhook's insert writes one index fewer (a CustomersDot event has no dedupe key).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

INDEX = "uq_received_events_open_dedupe"
OPEN = "status IN ('pending', 'in_flight', 'retry')"


def _create(where: str) -> None:
    op.create_index(
        INDEX,
        "received_events",
        ["source", "dedupe_key"],
        unique=True,
        sqlite_where=sa.text(where),
        postgresql_where=sa.text(where),
    )


def upgrade() -> None:
    """Rebuild the index over the open items that have a dedupe key (the same uniqueness: NULLs never
    collide); in one transaction, so no moment is without it."""
    op.drop_index(INDEX, table_name="received_events")
    _create(f"dedupe_key IS NOT NULL AND {OPEN}")


def downgrade() -> None:
    """The index over every open item again."""
    op.drop_index(INDEX, table_name="received_events")
    _create(OPEN)
