"""The supervision center's record, derived from the events: notices (issued, escalated,
closed, and by whose step), actions (disputes, promises, rulings, cancellations,
reopenings, notes), the caller's messages and every attempt to deliver them.

:func:`derive` is pure (events in, rows out); :func:`statements` gives the SQL that merges
them into the tables, which the writer runs in the transaction that records the events.
Like the fold, it converges whatever order and however often events arrive:

- actions and delivery attempts are one row per event, unique on its stream position (or
  on the message and attempt number): a repeat is ignored;
- a notice and a message are one row each, which several events fill in (issued, escalated,
  closed; queued, delivered or failed). Each event sets only its own columns, and a column
  once set keeps its value (``COALESCE``): a repeat, or an event arriving late, changes
  nothing it should not.

The events themselves stay whole in ``events``; these rows answer the center's and the
reports' questions without decoding JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, case, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from server.deadlines import NoticeKind, notice_id
from server.ledger import tables
from server.ledger.fold import LedgerEvent

NOTICE_EVENTS = frozenset({"notice_issued", "notice_closed"})
# A squad's dispute and promise, and everything the center decides.
ACTION_EVENTS = frozenset(
    {"disputed", "deferred", "upheld", "reassigned", "cancelled", "reopened", "note"}
)
MESSAGE_EVENTS = frozenset(
    {
        "citizen_message_queued",
        "citizen_message_attempt",
        "citizen_message_delivered",
        "citizen_message_failed",
    }
)
RECORDED_EVENTS = NOTICE_EVENTS | ACTION_EVENTS | MESSAGE_EVENTS


@dataclass
class Records:
    """Rows derived from a batch of events: notices and messages by id (partial rows,
    merged), actions and attempts as they come."""

    notices: dict[str, dict[str, Any]] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.notices or self.actions or self.messages or self.attempts)


def derive(events: Iterable[LedgerEvent]) -> Records:
    """The rows ``events`` give (other events are ignored), merged within the batch the way
    :func:`statements` merges them with the rows already recorded."""
    records = Records()
    for event in sorted(events, key=lambda e: (e.sort_key, e.unit)):
        if event.request_id is None or event.type not in RECORDED_EVENTS:
            continue
        if event.type in NOTICE_EVENTS:
            for row in _notice_rows(event):
                merge_row(records.notices, row["id"], row)
        elif event.type in ACTION_EVENTS:
            records.actions.append(_action_row(event))
        elif event.type == "citizen_message_attempt":
            attempt = _attempt_row(event)
            if attempt is not None:
                records.attempts.append(attempt)
        else:
            message = _message_row(event)
            if message is not None:
                merge_row(records.messages, message["key"], message)
    return records


# ---- notices ----------------------------------------------------------------------------------


def _notice_rows(event: LedgerEvent) -> list[dict[str, Any]]:
    """The notice's row (partial), and for an escalation the previous level's."""
    payload = event.payload
    ident, kind = _text(payload.get("notice")), _text(payload.get("notice_kind"))
    level = _integer(payload.get("level"))
    if ident is None or kind is None or level is None:
        return []
    assert event.request_id is not None
    row: dict[str, Any] = {
        "id": ident,
        "request_id": event.request_id,
        "unit": event.unit,
        "kind": kind,
        "level": level,
    }
    if event.type == "notice_closed":
        row |= {
            "closed_at": event.at,
            "closed_event": _text(payload.get("closed_by")),
            "closed_by": _text(payload.get("met_by")),
        }
        return [row]
    row |= {
        "squad": _text(payload.get("squad")),
        "due_at": _number(payload.get("due_at")),
        "issued_at": event.at,
        "issued_by": event.by,
    }
    rows = [row]
    if level > 1 and kind in NoticeKind._value2member_map_:
        previous = notice_id(event.request_id, NoticeKind(kind), level - 1)
        rows.append(
            {
                "id": previous,
                "request_id": event.request_id,
                "unit": event.unit,
                "kind": kind,
                "level": level - 1,
                "escalated_at": event.at,
            }
        )
    return rows


# ---- actions ----------------------------------------------------------------------------------


def _action_row(event: LedgerEvent) -> dict[str, Any]:
    payload = event.payload
    reassigned = event.type == "reassigned"
    assist = payload.get("assist") if reassigned else None
    return {
        "unit": event.unit,
        "stream_id": event.stream_id,
        "sort_key": event.sort_key,
        "request_id": event.request_id,
        "action": event.type,
        "at": event.at,
        "by": event.by,
        "note": _text(payload.get("note")),
        "reason": _text(payload.get("reason")),
        "squad": _text(payload.get("squad")) or _text(payload.get("disputed_by")),
        "from_unit": _text(payload.get("from_unit")) if reassigned else None,
        "to_unit": _text(payload.get("unit")) if reassigned else None,
        "category": _text(payload.get("category")) if reassigned else None,
        "assist": ",".join(map(str, assist)) if isinstance(assist, list) and assist else None,
        "duplicate_of": _text(payload.get("duplicate_of")),
        "until": _number(payload.get("until")) or _number(payload.get("resolve_by")),
    }


# ---- the caller's messages --------------------------------------------------------------------


def _message_row(event: LedgerEvent) -> dict[str, Any] | None:
    payload = event.payload
    key = _text(payload.get("key"))
    if key is None:
        return None
    row: dict[str, Any] = {
        "key": key,
        "message_id": _text(payload.get("message")),
        "request_id": event.request_id,
        "unit": event.unit,
    }
    if event.type == "citizen_message_queued":
        return row | {
            "event": _text(payload.get("event")),
            "lang": _text(payload.get("lang")),
            "text": _text(payload.get("text")),
            "phone": _text(payload.get("phone")),
            "queued_at": event.at,
            "queued_by": event.by,
        }
    outcome = event.type.removeprefix("citizen_message_")  # delivered, failed
    return row | {
        "outcome": outcome,
        "done_at": event.at,
        "attempts": _integer(payload.get("attempts")),
        "error": _text(payload.get("error")) if outcome == "failed" else None,
    }


def _attempt_row(event: LedgerEvent) -> dict[str, Any] | None:
    payload = event.payload
    key, number = _text(payload.get("key")), _integer(payload.get("attempt"))
    if key is None or number is None:
        return None
    return {
        "key": key,
        "request_id": event.request_id,
        "attempt": number,
        "at": event.at,
        "by": event.by,
        "outcome": _text(payload.get("outcome")),
        "status": _integer(payload.get("status")),
        "error": _text(payload.get("error")),
        "retry_at": _number(payload.get("retry_at")),
    }


# ---- SQL ----------------------------------------------------------------------------------------


def statements(dialect: str, records: Records) -> list[tuple[Insert, list[dict[str, Any]]]]:
    """(statement, rows) pairs that merge ``records`` into the tables on ``dialect``
    ("sqlite" or "postgresql"); run each with ``conn.execute(statement, rows)``."""
    found: list[tuple[Insert, list[dict[str, Any]]]] = []
    if records.notices:
        found.append(_upsert(dialect, tables.notices, "id", records.notices.values()))
    if records.actions:
        found.append((_insert(dialect, tables.actions).on_conflict_do_nothing(), records.actions))
    if records.messages:
        found.append(_upsert(dialect, tables.citizen_messages, "key", records.messages.values()))
    if records.attempts:
        attempts = _insert(dialect, tables.citizen_attempts).on_conflict_do_nothing()
        found.append((attempts, records.attempts))
    return found


def _upsert(
    dialect: str, table: Table, key: str, rows: Iterable[Mapping[str, Any]]
) -> tuple[Insert, list[dict[str, Any]]]:
    """Insert, or fill in the columns still empty (the first value set is kept). A notice's
    unit is the one it was issued to, whichever of its events came first."""
    statement = _insert(dialect, table)
    excluded = statement.excluded
    values: dict[str, Any] = {
        c.name: func.coalesce(table.c[c.name], excluded[c.name])
        for c in table.columns
        if c.name != key
    }
    if table is tables.notices:
        values["unit"] = case((excluded.issued_at.is_not(None), excluded.unit), else_=table.c.unit)
    columns = [c.name for c in table.columns]
    full = [{name: row.get(name) for name in columns} for row in rows]
    return statement.on_conflict_do_update(index_elements=[key], set_=values), full


def _insert(dialect: str, table: Table) -> Any:
    return (postgresql if dialect == "postgresql" else sqlite).insert(table)


# ---- helpers ------------------------------------------------------------------------------------


def merge_row(rows: dict[str, dict[str, Any]], key: str, row: Mapping[str, Any]) -> None:
    """``row`` (a notice's or a message's, partial) into ``rows[key]``: the columns still
    empty are filled, as :func:`statements` does in the database."""
    current = rows.get(key)
    if current is None:
        rows[key] = dict(row)
        return
    for name, value in row.items():
        if current.get(name) is None and value is not None:
            current[name] = value
    if row.get("issued_at") is not None and "unit" in row:
        current["unit"] = row["unit"]


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
