"""Live state retention: when a closed request's keys left Redis (``live_dropped_at``, set
by ``server.ledger.retention``), and an index on ``updated_at`` for finding the requests
closed before the retention window.

Revision 0003, after 0002.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("requests", sa.Column("live_dropped_at", sa.Float(), nullable=True))
    op.create_index("ix_requests_updated_at", "requests", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_requests_updated_at", "requests")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("live_dropped_at")
