"""Reading the supervision center's record (:mod:`server.ledger.records`): notices, actions,
the caller's messages with their delivery attempts. Every list is paged (``limit`` and
``offset``) in a stable order, newest first; times are epoch seconds.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import ColumnElement, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from server.ledger import tables
from server.ledger.writer import Ledger

Filter = str | Collection[str] | None


async def find_notices(
    source: AsyncEngine | Ledger,
    *,
    unit: Filter = None,
    request_id: str | None = None,
    kind: Filter = None,
    level: int | None = None,
    state: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Notices, newest issued first: of ``unit`` (the unit each was issued to), of one
    request, of ``kind``, of ``level`` or higher, ``state`` ``"open"`` or ``"closed"``,
    issued in [``since``, ``until``). Each row says who issued it, when it escalated, and
    when, by which step (``closed_event``) and by whom (``closed_by``) it closed."""
    notices = tables.notices
    conditions = _matching(notices, unit=unit, kind=kind, request_id=request_id)
    conditions += _time_range(notices.c.issued_at, since, until)
    if level is not None:
        conditions.append(notices.c.level >= level)
    if state == "open":
        conditions.append(notices.c.closed_at.is_(None))
    elif state == "closed":
        conditions.append(notices.c.closed_at.is_not(None))
    elif state is not None:
        raise ValueError(f"state: open or closed, not {state!r}")
    query = (
        select(notices)
        .where(*conditions)
        .order_by(notices.c.issued_at.desc(), notices.c.id.desc())
        .offset(offset)
        .limit(limit)
    )
    rows = await _rows(source, query)
    for row in rows:
        row["state"] = "open" if row["closed_at"] is None else "closed"
    return rows


async def find_actions(
    source: AsyncEngine | Ledger,
    *,
    unit: Filter = None,
    request_id: str | None = None,
    action: Filter = None,
    by: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Disputes, promises, rulings, cancellations, reopenings and notes, newest first: of
    ``unit`` (a reassignment is also found under the unit it moved the request to), of one
    request, of ``action`` (the event type), by one person (``by``, e.g. ``center:li``),
    at a time in [``since``, ``until``)."""
    actions = tables.actions
    conditions = _matching(actions, request_id=request_id, action=action, by=by)
    conditions += _time_range(actions.c.at, since, until)
    if unit is not None:
        units = [unit] if isinstance(unit, str) else list(unit)
        conditions.append(actions.c.unit.in_(units) | actions.c.to_unit.in_(units))
    query = (
        select(*(c for c in actions.columns if c.name not in ("id", "sort_key")))
        .where(*conditions)
        .order_by(actions.c.sort_key.desc(), actions.c.unit.desc())
        .offset(offset)
        .limit(limit)
    )
    return await _rows(source, query)


async def find_messages(
    source: AsyncEngine | Ledger,
    *,
    unit: Filter = None,
    request_id: str | None = None,
    outcome: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Messages to callers, newest queued first, each with its delivery attempts
    (``tries``, oldest first; ``attempts`` is how many it took, once it is done): of
    ``unit``, of one request, by ``outcome`` (``"delivered"``, ``"failed"``, ``"pending"``:
    neither yet), queued in [``since``, ``until``). Phone numbers are masked in the record
    itself."""
    messages, attempts = tables.citizen_messages, tables.citizen_attempts
    conditions = _matching(messages, unit=unit, request_id=request_id)
    conditions += _time_range(messages.c.queued_at, since, until)
    if outcome == "pending":
        conditions.append(messages.c.outcome.is_(None))
    elif outcome is not None:
        conditions.append(messages.c.outcome == outcome)
    query = (
        select(messages)
        .where(*conditions)
        .order_by(messages.c.queued_at.desc(), messages.c.key.desc())
        .offset(offset)
        .limit(limit)
    )
    rows = await _rows(source, query)
    if not rows:
        return rows
    tries = await _rows(
        source,
        select(*(c for c in attempts.columns if c.name != "id"))
        .where(attempts.c.key.in_([row["key"] for row in rows]))
        .order_by(attempts.c.key, attempts.c.attempt),
    )
    by_key: dict[str, list[dict[str, Any]]] = {}
    for attempt in tries:
        by_key.setdefault(attempt.pop("key"), []).append(attempt)
    for row in rows:
        row["tries"] = by_key.get(row["key"], [])
    return rows


def _matching(table: Table, **wanted: Any) -> list[ColumnElement[bool]]:
    """Equality (one value) or membership (several) for each given column."""
    conditions: list[ColumnElement[bool]] = []
    for name, value in wanted.items():
        if value is None:
            continue
        column = table.c[name]
        conditions.append(column == value if isinstance(value, str) else column.in_(list(value)))
    return conditions


def _time_range(column: Any, since: float | None, until: float | None) -> list[Any]:
    found = []
    if since is not None:
        found.append(column >= since)
    if until is not None:
        found.append(column < until)
    return found


async def _rows(source: AsyncEngine | Ledger, query: Any) -> list[dict[str, Any]]:
    engine = source.engine if isinstance(source, Ledger) else source
    async with engine.connect() as conn:
        return [dict(row) for row in (await conn.execute(query)).mappings()]
