"""The supervision center's record: notices, actions, the caller's messages and their
delivery attempts (tables derived from the events by ``server.ledger.records``); a
cancellation's reason and original on the request; an index for the squad filter.

The events already recorded are replayed into the new tables and columns, so a ledger
upgraded from the previous release answers for its past as well.

Revision 0002, after 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5000


def upgrade() -> None:
    op.add_column("requests", sa.Column("cancel_reason", sa.String()))
    op.add_column("requests", sa.Column("duplicate_of", sa.String()))
    op.create_index("ix_requests_squad", "requests", ["squad"])

    notices = op.create_table(
        "notices",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("unit", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("squad", sa.String()),
        sa.Column("due_at", sa.Float()),
        sa.Column("issued_at", sa.Float()),
        sa.Column("issued_by", sa.String()),
        sa.Column("escalated_at", sa.Float()),
        sa.Column("closed_at", sa.Float()),
        sa.Column("closed_event", sa.String()),
        sa.Column("closed_by", sa.String()),
    )
    op.create_index("ix_notices_request_id", "notices", ["request_id"])
    op.create_index("ix_notices_unit_issued_at", "notices", ["unit", "issued_at"])
    op.create_index("ix_notices_kind_level", "notices", ["kind", "level"])

    actions = op.create_table(
        "actions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("unit", sa.String(), nullable=False),
        sa.Column("stream_id", sa.String(), nullable=False),
        sa.Column("sort_key", sa.String(), nullable=False),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("at", sa.Float()),
        sa.Column("by", sa.String()),
        sa.Column("note", sa.Text()),
        sa.Column("reason", sa.String()),
        sa.Column("squad", sa.String()),
        sa.Column("from_unit", sa.String()),
        sa.Column("to_unit", sa.String()),
        sa.Column("category", sa.String()),
        sa.Column("assist", sa.String()),
        sa.Column("duplicate_of", sa.String()),
        sa.Column("until", sa.Float()),
        sa.UniqueConstraint("unit", "stream_id", name="uq_actions_unit_stream_id"),
    )
    op.create_index("ix_actions_request_id", "actions", ["request_id"])
    op.create_index("ix_actions_action_at", "actions", ["action", "at"])

    messages = op.create_table(
        "citizen_messages",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("message_id", sa.String()),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("unit", sa.String(), nullable=False),
        sa.Column("event", sa.String()),
        sa.Column("lang", sa.String()),
        sa.Column("text", sa.Text()),
        sa.Column("phone", sa.String()),
        sa.Column("queued_at", sa.Float()),
        sa.Column("queued_by", sa.String()),
        sa.Column("outcome", sa.String()),
        sa.Column("done_at", sa.Float()),
        sa.Column("attempts", sa.Integer()),
        sa.Column("error", sa.Text()),
    )
    op.create_index("ix_citizen_messages_request_id", "citizen_messages", ["request_id"])
    op.create_index("ix_citizen_messages_unit_queued_at", "citizen_messages", ["unit", "queued_at"])

    attempts = op.create_table(
        "citizen_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float()),
        sa.Column("by", sa.String()),
        sa.Column("outcome", sa.String()),
        sa.Column("status", sa.Integer()),
        sa.Column("error", sa.Text()),
        sa.Column("retry_at", sa.Float()),
        sa.UniqueConstraint("key", "attempt", name="uq_citizen_attempts_key_attempt"),
    )
    op.create_index("ix_citizen_attempts_request_id", "citizen_attempts", ["request_id"])

    _replay(notices, actions, messages, attempts)


def _replay(notices: sa.Table, actions: sa.Table, messages: sa.Table, attempts: sa.Table) -> None:
    """Fill the new tables and columns from the events recorded so far (the new tables are
    empty: the rows are merged here, then inserted)."""
    # The derivation of today's writer; only the columns this revision creates are written,
    # so a later change to it cannot break this migration.
    from server.ledger.fold import parse_entry
    from server.ledger.records import RECORDED_EVENTS, Records, derive, merge_row

    bind = op.get_bind()
    events = sa.table(
        "events",
        sa.column("id", sa.Integer()),
        sa.column("unit", sa.String()),
        sa.column("stream_id", sa.String()),
        sa.column("type", sa.String()),
        sa.column("data", sa.Text()),
    )
    merged = Records()
    last = 0
    while True:
        rows = bind.execute(
            sa.select(events.c.id, events.c.unit, events.c.stream_id, events.c.data)
            .where(events.c.type.in_(sorted(RECORDED_EVENTS)), events.c.id > last)
            .order_by(events.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        last = rows[-1].id
        parsed = [parse_entry(r.unit, r.stream_id, {"e": r.data}) for r in rows]
        batch = derive(e for e in parsed if e is not None)
        for key, row in batch.notices.items():
            merge_row(merged.notices, key, row)
        for key, row in batch.messages.items():
            merge_row(merged.messages, key, row)
        merged.actions += batch.actions
        merged.attempts += batch.attempts
    attempts_seen = {(a["key"], a["attempt"]): a for a in merged.attempts}
    for table, found in (
        (notices, list(merged.notices.values())),
        (actions, merged.actions),
        (messages, list(merged.messages.values())),
        (attempts, list(attempts_seen.values())),
    ):
        # An integer key is the database's to number.
        names = [
            c.name for c in table.columns if not (c.primary_key and isinstance(c.type, sa.Integer))
        ]
        for start in range(0, len(found), BATCH):
            chunk = [{n: row.get(n) for n in names} for row in found[start : start + BATCH]]
            bind.execute(table.insert(), chunk)
    requests = sa.table(
        "requests",
        sa.column("id", sa.String()),
        sa.column("cancel_reason", sa.String()),
        sa.column("duplicate_of", sa.String()),
    )
    cancelled = [a for a in merged.actions if a["action"] == "cancelled"]
    for start in range(0, len(cancelled), BATCH):
        bind.execute(
            requests.update()
            .where(requests.c.id == sa.bindparam("b_id"))
            .values(cancel_reason=sa.bindparam("b_reason"), duplicate_of=sa.bindparam("b_dup")),
            [
                {"b_id": a["request_id"], "b_reason": a["reason"], "b_dup": a["duplicate_of"]}
                for a in cancelled[start : start + BATCH]
            ],
        )


def downgrade() -> None:
    for table in ("citizen_attempts", "citizen_messages", "actions", "notices"):
        op.drop_table(table)
    op.drop_index("ix_requests_squad", "requests")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("duplicate_of")
        batch.drop_column("cancel_reason")
