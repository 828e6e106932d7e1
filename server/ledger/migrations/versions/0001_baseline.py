"""The ledger as it stood before migrations: requests, events, conflicts, audit.

The schema the previous release created with ``metadata.create_all``. A database made by it
has these tables and no ``alembic_version``: :mod:`server.ledger.migrate` recognises it and
records it as this revision (it runs nothing but the indexes a still older release did not
make), then upgrades it from here.

Revision 0001, the first. Frozen: never edit; add a migration instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("unit", sa.String(), nullable=False),
        sa.Column("category", sa.String()),
        sa.Column("district", sa.String()),
        sa.Column("route", sa.String()),
        sa.Column("state", sa.String()),
        sa.Column("caller_phone", sa.String()),
        sa.Column("description", sa.Text()),
        sa.Column("address", sa.Text()),
        sa.Column("lat", sa.Float()),
        sa.Column("lon", sa.Float()),
        sa.Column("squad", sa.String()),
        sa.Column("result", sa.Text()),
        sa.Column("received_at", sa.Float()),
        sa.Column("accept_by", sa.Float()),
        sa.Column("arrive_by", sa.Float()),
        sa.Column("resolve_by", sa.Float()),
        sa.Column("accepted_at", sa.Float()),
        sa.Column("arrived_at", sa.Float()),
        sa.Column("resolved_at", sa.Float()),
        sa.Column("updated_at", sa.Float()),
        sa.Column("event_key", sa.String()),
        sa.Column("version", sa.Integer()),
        sa.Column("promise_key", sa.String()),
    )
    for column in ("unit", "category", "district", "state", "received_at"):
        op.create_index(f"ix_requests_{column}", "requests", [column])
    op.create_index("ix_requests_caller_phone", "requests", ["caller_phone", "received_at"])

    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("unit", sa.String(), nullable=False),
        sa.Column("stream_id", sa.String(), nullable=False),
        sa.Column("sort_key", sa.String(), nullable=False),
        sa.Column("request_id", sa.String()),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("at", sa.Float()),
        sa.Column("by", sa.String()),
        sa.Column("data", sa.Text(), nullable=False),
        sa.UniqueConstraint("unit", "stream_id", name="uq_events_unit_stream_id"),
    )
    op.create_index("ix_events_request_id", "events", ["request_id"])
    op.create_index("ix_events_unit_at", "events", ["unit", "at"])
    op.create_index("ix_events_type", "events", ["type"])
    op.create_index("ix_events_by_type_at", "events", ["by", "type", "at"])

    op.create_table(
        "conflicts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("unit", sa.String(), nullable=False),
        sa.Column("stream_id", sa.String(), nullable=False),
        sa.Column("sort_key", sa.String(), nullable=False),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("at", sa.Float()),
        sa.Column("by", sa.String()),
        sa.Column("data", sa.Text(), nullable=False),
        sa.UniqueConstraint("unit", "stream_id", name="uq_conflicts_unit_stream_id"),
    )
    op.create_index("ix_conflicts_request_id", "conflicts", ["request_id"])

    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("by", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_audit_at", "audit", ["at"])


def downgrade() -> None:
    for table in ("audit", "conflicts", "events", "requests"):
        op.drop_table(table)
