"""The ledger's SQL schema (SQLAlchemy Core) at the newest migration: one row per request,
one row per event, and rows derived from the events for the supervision center's record
(notices, actions, messages to callers). Changed only together with a migration
(``server/ledger/migrations/README.md``).

Portable on purpose: only generic types (``String`` without a length is ``VARCHAR`` on
PostgreSQL and ``TEXT`` affinity on SQLite, so no value is ever too long to store). Times are
epoch seconds as ``Float``, the form Redis and the event stream carry.

Two bookkeeping columns make the request row converge whatever order events are written in
(several consumers share the streams, and a taken-over entry may arrive late):

- ``event_key``: sort key of the newest event whose state was applied; an older event never
  overwrites a newer state.
- ``version``: the request hash's ``v`` when its static fields were last copied; an older
  snapshot never overwrites a newer one.
- ``promise_key``: sort key of the ``deferred`` event whose promise is in ``resolve_by``.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

requests = Table(
    "requests",
    metadata,
    Column("id", String, primary_key=True),
    Column("unit", String, nullable=False),
    Column("category", String),
    Column("district", String),
    Column("route", String),
    Column("state", String),
    Column("caller_phone", String),
    Column("description", Text),
    Column("address", Text),
    Column("lat", Float),
    Column("lon", Float),
    Column("squad", String),
    Column("result", Text),
    Column("received_at", Float),
    Column("accept_by", Float),
    Column("arrive_by", Float),
    Column("resolve_by", Float),
    Column("accepted_at", Float),  # first acceptance
    Column("arrived_at", Float),  # first arrival on the scene
    Column("resolved_at", Float),
    Column("updated_at", Float),  # time of the newest event recorded
    Column("event_key", String),
    Column("version", Integer),
    Column("promise_key", String),
    Column("cancel_reason", String),  # duplicate, withdrawn, unfounded; lead_closed (assist)
    Column("duplicate_of", String),  # the request a duplicate repeats
    # When its live state left Redis (server.ledger.retention); None: still there.
    Column("live_dropped_at", Float),
    Index("ix_requests_unit", "unit"),
    Index("ix_requests_category", "category"),
    Index("ix_requests_district", "district"),
    Index("ix_requests_state", "state"),
    Index("ix_requests_received_at", "received_at"),
    # the intake console: a caller's earlier requests, newest first (and the ledger's
    # caller_phone filter)
    Index("ix_requests_caller_phone", "caller_phone", "received_at"),
    Index("ix_requests_squad", "squad"),
    Index("ix_requests_updated_at", "updated_at"),
    Index("ix_requests_resolved_at", "resolved_at"),  # the week's resolved: spot checks
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("unit", String, nullable=False),
    Column("stream_id", String, nullable=False),  # as Redis wrote it: "<ms>-<seq>"
    Column("sort_key", String, nullable=False),  # stream_id zero-padded: sorts as text
    Column("request_id", String),  # None for events that concern no request
    Column("type", String, nullable=False),
    Column("at", Float),
    Column("by", String),
    Column("data", Text, nullable=False),  # the event's JSON, as recorded
    UniqueConstraint("unit", "stream_id", name="uq_events_unit_stream_id"),
    Index("ix_events_request_id", "request_id"),
    Index("ix_events_unit_at", "unit", "at"),
    Index("ix_events_type", "type"),
    # the intake console: the requests a call-taker recorded ("received" events by them)
    Index("ix_events_by_type_at", "by", "type", "at"),
)

# Events the ledger refused to fold into a request row because they belong to a second
# request under the same id (Redis handed the number out again; see
# server.ledger.fold.attribute). Kept here, whole, so nothing is lost and someone can sort
# it out; ``received_at`` names which request under that id each event belongs to.
conflicts = Table(
    "conflicts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("unit", String, nullable=False),
    Column("stream_id", String, nullable=False),
    Column("sort_key", String, nullable=False),
    Column("request_id", String, nullable=False),
    Column("received_at", Float, nullable=False),  # of the request the event belongs to
    Column("type", String, nullable=False),
    Column("at", Float),
    Column("by", String),
    Column("data", Text, nullable=False),
    UniqueConstraint("unit", "stream_id", name="uq_conflicts_unit_stream_id"),
    Index("ix_conflicts_request_id", "request_id"),
)

# ---- what the supervision center did, and what the caller was told ---------------------
# Derived from the events (kept whole in ``events``) by server.ledger.records, in the same
# transaction; rows for the questions the center and the reports ask, each with who acted.

# A supervision notice (督办通知单), one row per request, kind and level: issued when a
# deadline passed unmet, escalated (the next level issued) while it stayed open, closed by
# the step that met it.
notices = Table(
    "notices",
    metadata,
    Column("id", String, primary_key=True),  # "<request>-<kind>-<level>" (server.deadlines)
    Column("request_id", String, nullable=False),
    Column("unit", String, nullable=False),  # the unit it was issued to
    Column("kind", String, nullable=False),  # accept, arrive, resolve, promise, waiting
    Column("level", Integer, nullable=False),  # 1, then 2, 3 ... as it escalates
    Column("squad", String),  # the squad holding the request when it was issued
    Column("due_at", Float),  # the deadline that passed
    Column("issued_at", Float),
    Column("issued_by", String),  # "system:supervision"
    Column("escalated_at", Float),  # when the next level was issued (None: never)
    Column("closed_at", Float),  # None: open
    Column("closed_event", String),  # how: the step that met it (accepted, resolved, cancelled...)
    Column("closed_by", String),  # who took that step (a squad, the center's staff member)
    Index("ix_notices_request_id", "request_id"),
    Index("ix_notices_unit_issued_at", "unit", "issued_at"),
    Index("ix_notices_kind_level", "kind", "level"),
)

# What people decided about a request beyond its routine steps: a squad's dispute and its
# promise (deferred), the center's rulings (upheld, reassigned), cancellations, reopenings
# and notes. One row per event; ``by`` is who acted.
actions = Table(
    "actions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("unit", String, nullable=False),  # the unit whose stream recorded it
    Column("stream_id", String, nullable=False),
    Column("sort_key", String, nullable=False),
    Column("request_id", String, nullable=False),
    Column("action", String, nullable=False),  # the event type
    Column("at", Float),
    Column("by", String),
    Column("note", Text),
    Column("reason", String),  # a dispute's or a cancellation's
    Column("squad", String),  # who disputed or promised; whose assignment was revoked
    Column("from_unit", String),  # a reassignment's
    Column("to_unit", String),
    Column("category", String),  # a reassignment's new category
    Column("assist", String),  # a reassignment's assisting units, comma-separated
    Column("duplicate_of", String),  # a cancellation as a duplicate's
    Column("until", Float),  # a promise's date; a reopening's new resolution deadline
    UniqueConstraint("unit", "stream_id", name="uq_actions_unit_stream_id"),
    Index("ix_actions_request_id", "request_id"),
    Index("ix_actions_action_at", "action", "at"),
)

# A message to the caller (server.citizen): queued once per idempotency key, then delivered
# or failed for good; ``outcome`` is None while it is still being tried.
citizen_messages = Table(
    "citizen_messages",
    metadata,
    Column("key", String, primary_key=True),  # the idempotency key
    Column("message_id", String),
    Column("request_id", String, nullable=False),
    Column("unit", String, nullable=False),
    Column("event", String),  # the step it tells of (received, accepted, ...)
    Column("lang", String),
    Column("text", Text),
    Column("phone", String),  # masked: the last four digits only
    Column("queued_at", Float),
    Column("queued_by", String),
    Column("outcome", String),  # delivered, failed, None: not yet
    Column("done_at", Float),
    Column("attempts", Integer),  # how many it took (set with the outcome)
    Column("error", Text),  # a failure's last error
    Index("ix_citizen_messages_request_id", "request_id"),
    Index("ix_citizen_messages_unit_queued_at", "unit", "queued_at"),
)

# Every attempt to deliver a message, with the gateway's answer.
citizen_attempts = Table(
    "citizen_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String, nullable=False),  # the message's idempotency key
    Column("request_id", String, nullable=False),
    Column("attempt", Integer, nullable=False),  # 1, 2, ...
    Column("at", Float),
    Column("by", String),
    Column("outcome", String),  # delivered, retry, failed
    Column("status", Integer),  # the gateway's HTTP status (None: no answer)
    Column("error", Text),
    Column("retry_at", Float),  # when it is tried again (retry only)
    UniqueConstraint("key", "attempt", name="uq_citizen_attempts_key_attempt"),
    Index("ix_citizen_attempts_request_id", "request_id"),
)

# Columns a caller sees; the bookkeeping ones stay inside the ledger.
REQUEST_COLUMNS: tuple[str, ...] = tuple(
    c.name
    for c in requests.columns
    if c.name not in ("event_key", "version", "promise_key", "live_dropped_at")
)

# Actions on the record itself that are not events of a request (an export of the ledger):
# who did what, when, with which parameters.
audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("by", String, nullable=False),  # actor label, e.g. "center:li"
    Column("action", String, nullable=False),  # e.g. "ledger_export"
    Column("detail", Text, nullable=False),  # JSON: the filters, the rows returned
    Index("ix_audit_at", "at"),
)

# ---- the center's reports (server.reports) ---------------------------------------------------

# Weekly spot checks (暗访): each request drawn for a callback, once ever (the unique
# request_id), and the outcome the center recorded.
spot_checks = Table(
    "spot_checks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("week", String, nullable=False),  # ISO week of the draw, "2026-W10"
    Column("unit", String, nullable=False),  # the unit that resolved it
    Column("request_id", String, nullable=False),
    Column("category", String),
    Column("seed", String, nullable=False),  # the draw's seed: the same seed draws the same
    Column("drawn_at", Float, nullable=False),
    Column("drawn_by", String, nullable=False),
    Column("outcome", String),  # satisfied / not_satisfied / not_fixed / unreachable; None: not yet
    Column("note", Text),
    Column("outcome_at", Float),
    Column("outcome_by", String),
    UniqueConstraint("request_id", name="uq_spot_checks_request_id"),
    Index("ix_spot_checks_week", "week"),
    Index("ix_spot_checks_unit", "unit"),
    Index("ix_spot_checks_outcome_at", "outcome_at"),
)

# Efficiency records (效能档案): each unit's scorecard of a month, frozen when the center
# closes the month; never updated (a later recomputation is shown beside it).
efficiency_records = Table(
    "efficiency_records",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("month", String, nullable=False),  # "2026-03"
    Column("unit", String, nullable=False),
    Column("score", Float),
    Column("rank", Integer),
    Column("figures", Text, nullable=False),  # the scorecard as JSON
    Column("policy", Text, nullable=False),  # the weighting it was scored with, as JSON
    Column("as_of", Float, nullable=False),  # the moment the figures were judged at
    Column("closed_at", Float, nullable=False),
    Column("closed_by", String, nullable=False),
    UniqueConstraint("month", "unit", name="uq_efficiency_records_month_unit"),
    Index("ix_efficiency_records_unit", "unit"),
)
