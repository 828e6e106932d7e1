"""Reading the ledger: requests by unit, category, district, state, time range, missed
deadlines, supervision notices, caller phone and squad; one request's events; a CSV export.
Plain SQLAlchemy Core selects, the same on SQLite and PostgreSQL. Times are epoch seconds (a
``datetime`` is accepted for ``since`` / ``until``).

The CSV is opened by people in spreadsheet programs, and its text comes from callers: a text
cell that a spreadsheet would run as a formula is neutralised (:func:`spreadsheet_safe`).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, exists, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from server import ids
from server.ledger import tables
from server.ledger.writer import Ledger
from server.store import keys

Filter = str | Collection[str] | None  # one value, or any of several
Moment = float | datetime | None

# A UTF-8 byte order mark: without it, spreadsheet programs read the file in the system's
# legacy code page and the Chinese names and descriptions come out garbled.
CSV_BOM = "\ufeff"
# First characters that make a spreadsheet read a cell as a formula (OWASP, "CSV Injection"):
# "=HYPERLINK(...)" or "+cmd|' /C calc'!A0" would run when the export is opened.
# The full-width forms too: Chinese-locale spreadsheets (WPS, Excel) start a formula with them.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "＝", "＋", "－", "＠")


async def find_requests(
    source: AsyncEngine | Ledger,
    *,
    unit: Filter = None,
    category: Filter = None,
    district: Filter = None,
    state: Filter = None,
    since: Moment = None,
    until: Moment = None,
    overdue: str | None = None,
    notice: str | None = None,
    notice_level: int | None = None,
    caller_phone: str | None = None,
    squad: Filter = None,
    now: float | None = None,
    limit: int | None = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Requests matching every given filter, oldest received first. ``since`` (inclusive)
    and ``until`` (exclusive) bound the time received. ``limit=None``: all of them.

    - ``overdue``: requests that missed a deadline: ``"accept"``, ``"arrive"``,
      ``"resolve"`` (its promise, after a deferral) or ``"any"`` of them (see
      :func:`missed_deadline`; ``now``, default the clock, is the end of an open one);
    - ``notice``: requests that were issued a supervision notice of that kind (``"any"``:
      of any kind), of ``notice_level`` or higher (``notice_level`` alone: any kind);
    - ``caller_phone``: the caller's number, exactly as recorded;
    - ``squad``: the squad that has the request, or had it when it was resolved or
      cancelled."""
    query = (
        _select_requests(
            unit=unit,
            category=category,
            district=district,
            state=state,
            since=since,
            until=until,
            overdue=overdue,
            notice=notice,
            notice_level=notice_level,
            caller_phone=caller_phone,
            squad=squad,
            now=time.time() if now is None else now,
        )
        .offset(offset)
        .limit(limit)
    )
    async with _engine(source).connect() as conn:
        return [dict(row) for row in (await conn.execute(query)).mappings()]


MILESTONES = ("accept", "arrive", "resolve")


def missed_deadline(milestone: str, now: float) -> ColumnElement[bool]:
    """The request missed the deadline of ``milestone`` (accept, arrive, resolve): it was
    reached after it, or was not reached and the deadline passed while the request was
    open (an open one: before ``now``; a cancelled one: before its last event)."""
    requests = tables.requests
    deadline, reached = {
        "accept": (requests.c.accept_by, requests.c.accepted_at),
        "arrive": (requests.c.arrive_by, requests.c.arrived_at),
        "resolve": (requests.c.resolve_by, requests.c.resolved_at),
    }[milestone]
    ended = case((requests.c.state == "cancelled", requests.c.updated_at), else_=literal(now))
    return and_(
        deadline.is_not(None),
        or_(reached > deadline, and_(reached.is_(None), deadline < ended)),
    )


async def request_events(
    source: AsyncEngine | Ledger, request_id: str, *, limit: int | None = None, offset: int = 0
) -> list[dict[str, Any]]:
    """The request's events in the order they were recorded (``limit=None``: all of them,
    from ``offset``); ``data`` is the decoded JSON."""
    events = tables.events
    query = (
        select(
            events.c.unit,
            events.c.stream_id,
            events.c.request_id,
            events.c.type,
            events.c.at,
            events.c.by,
            events.c.data,
        )
        .where(events.c.request_id == request_id)
        .order_by(events.c.sort_key, events.c.unit)
        .offset(offset)
        .limit(limit)
    )
    async with _engine(source).connect() as conn:
        rows = [dict(row) for row in (await conn.execute(query)).mappings()]
    for row in rows:
        row["data"] = json.loads(row["data"])
    return rows


async def request_unit(source: AsyncEngine | Ledger, request_id: str) -> str | None:
    """The unit the ledger's record of a request gives (its last), or None: no such request."""
    requests = tables.requests
    async with _engine(source).connect() as conn:
        unit = (
            await conn.execute(select(requests.c.unit).where(requests.c.id == request_id))
        ).scalar_one_or_none()
    return str(unit) if unit is not None else None


async def archived_request(source: AsyncEngine | Ledger, request_id: str) -> dict[str, Any] | None:
    """A request as the ledger recorded it, in the shape of the live request's detail
    (``GET /api/v1/requests/{id}``: fields, ``deadlines``, ``timeline``), with ``archived``
    true; for a request whose live state has left Redis (:mod:`server.ledger.retention`).
    None: the ledger has no such request."""
    requests = tables.requests
    query = select(*(requests.c[name] for name in tables.REQUEST_COLUMNS)).where(
        requests.c.id == request_id
    )
    async with _engine(source).connect() as conn:
        row = (await conn.execute(query)).mappings().one_or_none()
    if row is None:
        return None
    found: dict[str, Any] = {k: v for k, v in row.items() if v is not None}
    found["state"] = found.get("state") or "received"
    found["unit"] = None if row["unit"] == keys.NO_UNIT else row["unit"]
    found["deadlines"] = {k: found.pop(k, None) for k in ("accept_by", "arrive_by", "resolve_by")}
    found["timeline"] = [
        event["data"]
        for event in await request_events(source, request_id)
        if not event["type"].startswith("citizen_message_")  # the stream's, not the timeline's
    ]
    found["archived"] = True
    return found


async def request_conflicts(source: AsyncEngine | Ledger, request_id: str) -> list[dict[str, Any]]:
    """Events refused under ``request_id`` because they belong to another request that was
    given the same id (see :func:`server.ledger.fold.attribute`), in stream order, each with
    the ``received_at`` of the request it belongs to; ``data`` is the decoded JSON."""
    conflicts = tables.conflicts
    query = (
        select(
            conflicts.c.unit,
            conflicts.c.stream_id,
            conflicts.c.request_id,
            conflicts.c.received_at,
            conflicts.c.type,
            conflicts.c.at,
            conflicts.c.by,
            conflicts.c.data,
        )
        .where(conflicts.c.request_id == request_id)
        .order_by(conflicts.c.sort_key, conflicts.c.unit)
    )
    async with _engine(source).connect() as conn:
        rows = [dict(row) for row in (await conn.execute(query)).mappings()]
    for row in rows:
        row["data"] = json.loads(row["data"])
    return rows


async def export_csv(
    source: AsyncEngine | Ledger,
    *,
    limit: int | None = None,
    offset: int = 0,
    **filters: Any,
) -> str:
    """CSV of the matching requests (all of them unless ``limit``; ``filters`` those of
    :func:`find_requests`): a UTF-8 byte order mark, a header row naming the columns, then
    one row per request, in :func:`find_requests` order. Text cells are made
    :func:`spreadsheet_safe`; numbers are written as numbers."""
    rows = await find_requests(source, limit=limit, offset=offset, **filters)
    out = io.StringIO()
    writer = csv.DictWriter(
        out, fieldnames=tables.REQUEST_COLUMNS, extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows({name: spreadsheet_safe(value) for name, value in row.items()} for row in rows)
    return CSV_BOM + out.getvalue()


def spreadsheet_safe(value: Any) -> Any:
    """``value`` as a spreadsheet shows it and never runs it: text starting with ``=``,
    ``+``, ``-``, ``@`` (or their full-width forms), a tab or a line break gets a leading
    ``'`` (the spreadsheet then shows the text as typed); anything else, numbers included,
    is returned as is."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


async def highest_request_number(source: AsyncEngine | Ledger, day: str) -> int:
    """The highest request number of ``day`` (``YYYYMMDD``) the ledger recorded, 0 if none:
    where that day's sequence resumes when Redis lost its counter (see server.ids)."""
    requests = tables.requests
    low, high = ids.day_bounds(day)
    query = (
        select(requests.c.id)
        .where(
            requests.c.id >= low,
            requests.c.id < high,
            # assist items' ids sort among the day's numbers
            requests.c.id.not_like(f"%{ids.ASSIST_SEPARATOR}%"),
        )
        # Longest first: a day past 999,999 has wider numbers that sort lower as text.
        .order_by(func.length(requests.c.id).desc(), requests.c.id.desc())
        .limit(1)
    )
    async with _engine(source).connect() as conn:
        highest = (await conn.execute(query)).scalar_one_or_none()
    parsed = ids.parse_request_id(highest) if highest else None
    return parsed[1] if parsed else 0


def _select_requests(
    *,
    unit: Filter,
    category: Filter,
    district: Filter,
    state: Filter,
    since: Moment,
    until: Moment,
    overdue: str | None,
    notice: str | None,
    notice_level: int | None,
    caller_phone: str | None,
    squad: Filter,
    now: float,
) -> Select[Any]:
    requests = tables.requests
    conditions: list[ColumnElement[bool]] = []
    for column, wanted in (
        (requests.c.unit, unit),
        (requests.c.category, category),
        (requests.c.district, district),
        (requests.c.state, state),
        (requests.c.caller_phone, caller_phone),
        (requests.c.squad, squad),
    ):
        if isinstance(wanted, str):
            conditions.append(column == wanted)
        elif wanted is not None:
            conditions.append(column.in_(list(wanted)))
    if since is not None:
        conditions.append(requests.c.received_at >= _epoch(since))
    if until is not None:
        conditions.append(requests.c.received_at < _epoch(until))
    if overdue is not None:
        milestones = MILESTONES if overdue == "any" else (overdue,)
        if not set(milestones) <= set(MILESTONES):
            raise ValueError(f"overdue: one of any, {', '.join(MILESTONES)}; not {overdue!r}")
        conditions.append(or_(*(missed_deadline(m, now) for m in milestones)))
    if notice is not None or notice_level is not None:
        notices = tables.notices
        issued = [notices.c.request_id == requests.c.id]
        if notice not in (None, "any"):
            issued.append(notices.c.kind == notice)
        if notice_level is not None:
            issued.append(notices.c.level >= notice_level)
        conditions.append(exists().where(*issued))
    columns = [requests.c[name] for name in tables.REQUEST_COLUMNS]
    # Rows whose "received" event is not recorded yet have no time: they come last on
    # both databases (SQLite and PostgreSQL place NULLs differently by default).
    return (
        select(*columns)
        .where(*conditions)
        .order_by(requests.c.received_at.is_(None), requests.c.received_at, requests.c.id)
    )


def _epoch(moment: float | datetime) -> float:
    return moment.timestamp() if isinstance(moment, datetime) else float(moment)


def _engine(source: AsyncEngine | Ledger) -> AsyncEngine:
    return source.engine if isinstance(source, Ledger) else source


async def record_audit(
    source: AsyncEngine | Ledger,
    by: str,
    action: str,
    detail: dict[str, Any],
    at: float | None = None,
) -> None:
    """Record that ``by`` did ``action`` (with ``detail``) on the record."""
    engine = source.engine if isinstance(source, Ledger) else source
    async with engine.begin() as conn:
        await conn.execute(
            tables.audit.insert().values(
                at=time.time() if at is None else at,
                by=by,
                action=action,
                detail=json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str),
            )
        )


async def audit_trail(
    source: AsyncEngine | Ledger, action: str | None = None, limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    """The newest audit rows first (``limit`` of them from ``offset``)."""
    engine = source.engine if isinstance(source, Ledger) else source
    statement = select(tables.audit).order_by(tables.audit.c.id.desc()).offset(offset).limit(limit)
    if action is not None:
        statement = statement.where(tables.audit.c.action == action)
    async with engine.connect() as conn:
        rows = (await conn.execute(statement)).mappings().all()
    return [dict(row) | {"detail": json.loads(row["detail"])} for row in rows]
