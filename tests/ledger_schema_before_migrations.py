"""The ledger's schema as the release before migrations created it (``metadata.create_all``
of ``server/ledger/tables.py`` before Alembic), frozen here so that a test can build such a
database and check that :func:`server.ledger.migrate.upgrade` takes it over. Never edit.
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
    Index("ix_requests_unit", "unit"),
    Index("ix_requests_category", "category"),
    Index("ix_requests_district", "district"),
    Index("ix_requests_state", "state"),
    Index("ix_requests_received_at", "received_at"),
    # the intake console: a caller's earlier requests, newest first
    Index("ix_requests_caller_phone", "caller_phone", "received_at"),
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
