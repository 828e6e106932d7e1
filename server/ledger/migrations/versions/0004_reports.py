"""The center's reports: weekly spot checks and monthly efficiency records.

``spot_checks``: each request drawn for a callback (once ever: unique ``request_id``) and
the outcome the center recorded. ``efficiency_records``: each unit's scorecard of a month,
frozen when the month is closed (unique per month and unit). An index on
``requests.resolved_at``: a week's draw reads the requests resolved in the week. Nothing to
fill from the events already recorded.

Revision 0004, after 0003. Frozen once merged: never edit; add a migration instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_requests_resolved_at", "requests", ["resolved_at"])
    op.create_table(
        "spot_checks",
        sa.Column("id", sa.Integer(), autoincrement=True, primary_key=True),
        sa.Column("week", sa.String(), nullable=False),
        sa.Column("unit", sa.String(), nullable=False),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("category", sa.String()),
        sa.Column("seed", sa.String(), nullable=False),
        sa.Column("drawn_at", sa.Float(), nullable=False),
        sa.Column("drawn_by", sa.String(), nullable=False),
        sa.Column("outcome", sa.String()),
        sa.Column("note", sa.Text()),
        sa.Column("outcome_at", sa.Float()),
        sa.Column("outcome_by", sa.String()),
        sa.UniqueConstraint("request_id", name="uq_spot_checks_request_id"),
    )
    op.create_index("ix_spot_checks_week", "spot_checks", ["week"])
    op.create_index("ix_spot_checks_unit", "spot_checks", ["unit"])
    op.create_index("ix_spot_checks_outcome_at", "spot_checks", ["outcome_at"])
    op.create_table(
        "efficiency_records",
        sa.Column("id", sa.Integer(), autoincrement=True, primary_key=True),
        sa.Column("month", sa.String(), nullable=False),
        sa.Column("unit", sa.String(), nullable=False),
        sa.Column("score", sa.Float()),
        sa.Column("rank", sa.Integer()),
        sa.Column("figures", sa.Text(), nullable=False),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("as_of", sa.Float(), nullable=False),
        sa.Column("closed_at", sa.Float(), nullable=False),
        sa.Column("closed_by", sa.String(), nullable=False),
        sa.UniqueConstraint("month", "unit", name="uq_efficiency_records_month_unit"),
    )
    op.create_index("ix_efficiency_records_unit", "efficiency_records", ["unit"])


def downgrade() -> None:
    op.drop_index("ix_efficiency_records_unit", table_name="efficiency_records")
    op.drop_table("efficiency_records")
    op.drop_index("ix_spot_checks_outcome_at", table_name="spot_checks")
    op.drop_index("ix_spot_checks_unit", table_name="spot_checks")
    op.drop_index("ix_spot_checks_week", table_name="spot_checks")
    op.drop_table("spot_checks")
    op.drop_index("ix_requests_resolved_at", table_name="requests")
