"""The ledger (台账): the categorized, queryable SQL record of every request and event.

Each hub process runs :meth:`Ledger.consume`, which copies the units' Redis event streams
into SQL (SQLite by default, PostgreSQL when configured) through a consumer group, at least
once and idempotently. :mod:`server.ledger.queries` reads it back.

Modules: ``tables`` (schema), ``migrate`` and ``migrations/`` (its changes, run at start),
``fold`` (pure: entries -> request rows), ``records`` (pure: events -> the center's record:
notices, actions, messages), ``streams`` (the consumer group), ``writer`` (:class:`Ledger`),
``queries`` and ``record_queries``, ``retention`` (dropping recorded live state from Redis).
"""

from server.ledger.queries import (
    MILESTONES,
    archived_request,
    audit_trail,
    export_csv,
    find_requests,
    highest_request_number,
    record_audit,
    request_conflicts,
    request_events,
    request_unit,
)
from server.ledger.record_queries import find_actions, find_messages, find_notices
from server.ledger.streams import GROUP, StreamEntry, ack
from server.ledger.tables import conflicts, events, metadata, requests
from server.ledger.writer import (
    DEFAULT_CONSUMER,
    Ledger,
    async_database_url,
    default_database_url,
)

__all__ = [
    "DEFAULT_CONSUMER",
    "MILESTONES",
    "archived_request",
    "GROUP",
    "Ledger",
    "StreamEntry",
    "ack",
    "audit_trail",
    "conflicts",
    "async_database_url",
    "default_database_url",
    "events",
    "export_csv",
    "find_actions",
    "find_messages",
    "find_notices",
    "find_requests",
    "highest_request_number",
    "metadata",
    "record_audit",
    "request_conflicts",
    "request_events",
    "request_unit",
    "requests",
]
