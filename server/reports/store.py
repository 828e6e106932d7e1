"""The reports' reads and writes in the ledger's database: the requests and events of a
period, the spot checks, the efficiency records. Plain SQLAlchemy Core, the same on SQLite
and PostgreSQL; what the rows mean is decided by the pure modules of this package.

A period's events are read with the request rows they belong to (requests received in the
period), only of the types the figures count, and with their JSON only where the figures
read it: a month of 150,000 requests is a few hundred thousand small rows, not millions.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import msgspec
from msgspec.json import decode as decode_json
from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.ledger import tables
from server.reports.periods import Span
from server.reports.sampling import Candidate
from server.reports.scorecard import (
    COUNTED_EVENTS,
    ROW_COLUMNS,
    Event,
    RequestFacts,
    Scorecard,
    facts_of,
)

# The request columns the figures read (the scorecard's), and those the fortnight shows.
FACT_COLUMNS = ROW_COLUMNS
PLACE_COLUMNS = ("lat", "lon", "address")
# Events whose JSON the figures read (the others count by type, unit and time alone).
PAYLOAD_EVENTS = frozenset({"deferred", "notice_issued", "cancelled"})
ASSIST = f"%{'~'}%"  # server.ids.ASSIST_SEPARATOR: assist items have no caller of their own
FINAL_STATES = ("resolved", "cancelled", "transferred")


class Conflict(Exception):
    """The write met a row that says otherwise (a month already closed, an outcome already
    recorded, a request drawn by a concurrent draw)."""


# ---- the ledger of a period -----------------------------------------------------------------


async def period_facts(
    engine: AsyncEngine,
    span: Span,
    as_of: float,
    *,
    places: bool = False,
) -> tuple[list[dict[str, Any]], list[RequestFacts]]:
    """The requests received in ``span`` (rows, in no set order) and their facts judged at
    ``as_of``. ``places``: the rows carry ``lat``, ``lon`` and ``address`` too."""
    requests, events = tables.requests, tables.events
    in_span = and_(requests.c.received_at >= span.start, requests.c.received_at < span.end)
    columns = (*FACT_COLUMNS, *(PLACE_COLUMNS if places else ()))
    # No ORDER BY: the figures do not depend on the order of requests, and sorting a month
    # of rows costs more than anything else in this read.
    row_query = select(*(requests.c[name] for name in columns)).where(in_span)
    # The events the figures count: the rare ones by type, unit and time (no resolution: the
    # row's resolved_at stands for it unless the request was reopened); the few whose JSON
    # the figures read; then the resolutions of the requests reopened.
    joined = events.join(requests, events.c.request_id == requests.c.id)
    plain_query = (
        select(events.c.request_id, events.c.unit, events.c.type, events.c.at)
        .select_from(joined)
        .where(in_span, events.c.type.in_(sorted(COUNTED_EVENTS - PAYLOAD_EVENTS - {"resolved"})))
        .order_by(events.c.sort_key)
    )
    payload_query = (
        select(events.c.request_id, events.c.unit, events.c.type, events.c.at, events.c.data)
        .select_from(joined)
        .where(in_span, events.c.type.in_(sorted(PAYLOAD_EVENTS)))
        .order_by(events.c.sort_key)
    )
    async with engine.connect() as conn:
        raw_rows = (await conn.execute(row_query)).all()
        plain_events = list((await conn.execute(plain_query)).all())
        payload_events = (await conn.execute(payload_query)).all()
        reopened = sorted({r[0] for r in plain_events if r[2] == "reopened"})
        for start in range(0, len(reopened), 500):  # bounded IN lists
            resolutions = (
                select(events.c.request_id, events.c.unit, events.c.type, events.c.at)
                .where(
                    events.c.request_id.in_(reopened[start : start + 500]),
                    events.c.type == "resolved",
                )
                .order_by(events.c.sort_key)
            )
            plain_events += (await conn.execute(resolutions)).all()
    rows = [dict(zip(columns, values, strict=True)) for values in raw_rows]
    by_request: dict[str, list[Event]] = defaultdict(list)
    empty: dict[str, Any] = {}
    for request_id, unit, kind, at in plain_events:
        by_request[request_id].append(Event(kind, at, unit, empty))
    for request_id, unit, kind, at, data in payload_events:
        by_request[request_id].append(Event(kind, at, unit, decode_json(data)))
    no_events: list[Event] = []
    facts = [facts_of(row, by_request.get(row["id"], no_events), as_of) for row in rows]
    return rows, facts


async def spot_outcomes(engine: AsyncEngine, span: Span) -> list[tuple[str, str, float]]:
    """(unit, outcome, outcome_at) of every callback recorded in ``span``."""
    checks = tables.spot_checks
    query = select(checks.c.unit, checks.c.outcome, checks.c.outcome_at).where(
        checks.c.outcome_at >= span.start, checks.c.outcome_at < span.end
    )
    async with engine.connect() as conn:
        return [(u, o, float(t)) for u, o, t in (await conn.execute(query)).all()]


async def rows_in_state(engine: AsyncEngine, state: str) -> list[dict[str, Any]]:
    """Requests whose state is ``state`` now (e.g. ``disputed``), oldest first."""
    requests = tables.requests
    query = (
        select(*(requests.c[name] for name in FACT_COLUMNS))
        .where(requests.c.state == state)
        .order_by(requests.c.received_at, requests.c.id)
    )
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def open_rows(engine: AsyncEngine) -> list[dict[str, Any]]:
    """Linkage requests still open now."""
    requests = tables.requests
    query = select(*(requests.c[name] for name in FACT_COLUMNS)).where(
        requests.c.route == "linkage", requests.c.state.not_in(FINAL_STATES)
    )
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def last_events(
    engine: AsyncEngine, request_ids: Collection[str], kind: str
) -> dict[str, dict[str, Any]]:
    """The last event of type ``kind`` of each request (its JSON), by request id."""
    if not request_ids:
        return {}
    events = tables.events
    query = (
        select(events.c.request_id, events.c.data)
        .where(events.c.request_id.in_(list(request_ids)), events.c.type == kind)
        .order_by(events.c.sort_key)
    )
    async with engine.connect() as conn:
        found = (await conn.execute(query)).all()
    return {request_id: json.loads(data) for request_id, data in found}


async def open_notices(engine: AsyncEngine, level: int) -> list[dict[str, Any]]:
    """The ledger's notices not closed, at ``level`` or higher."""
    notices = tables.notices
    query = select(notices).where(notices.c.closed_at.is_(None), notices.c.level >= level)
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


# ---- efficiency records ---------------------------------------------------------------------


async def records(
    engine: AsyncEngine, *, month: str | None = None, unit: str | None = None
) -> list[dict[str, Any]]:
    """Frozen records (oldest month first, then by rank), ``figures`` and ``policy``
    decoded."""
    records = tables.efficiency_records
    conditions: list[ColumnElement[bool]] = []
    if month is not None:
        conditions.append(records.c.month == month)
    if unit is not None:
        conditions.append(records.c.unit == unit)
    query = select(records).where(*conditions).order_by(records.c.month, records.c.unit)
    async with engine.connect() as conn:
        rows = [dict(r) for r in (await conn.execute(query)).mappings()]
    for row in rows:
        row["figures"] = json.loads(row["figures"])
        row["policy"] = json.loads(row["policy"])
        row.pop("id", None)
    return rows


async def closed_months(engine: AsyncEngine, months: Iterable[str]) -> set[str]:
    records = tables.efficiency_records
    query = select(records.c.month).where(records.c.month.in_(list(months))).distinct()
    async with engine.connect() as conn:
        return {m for (m,) in (await conn.execute(query)).all()}


async def close_month(
    engine: AsyncEngine,
    month: str,
    cards: Sequence[Scorecard],
    policy: dict[str, Any],
    as_of: float,
    by: str,
    at: float | None = None,
) -> None:
    """Freeze each card as the unit's record of ``month``, in one transaction; raises
    Conflict if the month is closed already (every record or none is written)."""
    at = time.time() if at is None else at
    encoded_policy = json.dumps(policy, sort_keys=True)
    values = [
        {
            "month": month,
            "unit": card.unit,
            "score": card.score,
            "rank": card.rank,
            "figures": msgspec.json.encode(card).decode(),
            "policy": encoded_policy,
            "as_of": as_of,
            "closed_at": at,
            "closed_by": by,
        }
        for card in cards
    ]
    try:
        async with engine.begin() as conn:
            if await _month_closed(conn, month):
                raise Conflict(f"month {month} is closed already")
            if values:
                await conn.execute(tables.efficiency_records.insert(), values)
    except IntegrityError:
        raise Conflict(f"month {month} is closed already") from None


async def _month_closed(conn: AsyncConnection, month: str) -> bool:
    records = tables.efficiency_records
    query = select(records.c.id).where(records.c.month == month).limit(1)
    return (await conn.execute(query)).first() is not None


# ---- spot checks ----------------------------------------------------------------------------


async def resolved_in(engine: AsyncEngine, span: Span) -> list[Candidate]:
    """Linkage requests resolved (first) in ``span`` and resolved still, assist items left
    out (they have no caller of their own)."""
    requests = tables.requests
    query = select(requests.c.id, requests.c.unit, requests.c.category).where(
        requests.c.resolved_at >= span.start,
        requests.c.resolved_at < span.end,
        requests.c.state == "resolved",
        requests.c.route == "linkage",
        requests.c.id.not_like(ASSIST),
    )
    async with engine.connect() as conn:
        return [Candidate(i, u, c or "") for i, u, c in (await conn.execute(query)).all()]


async def drawn_among(engine: AsyncEngine, request_ids: Collection[str]) -> set[str]:
    """Which of ``request_ids`` were ever drawn."""
    checks = tables.spot_checks
    found: set[str] = set()
    ids = sorted(request_ids)
    async with engine.connect() as conn:
        for start in range(0, len(ids), 500):  # bounded IN lists
            chunk = ids[start : start + 500]
            query = select(checks.c.request_id).where(checks.c.request_id.in_(chunk))
            found |= {r for (r,) in (await conn.execute(query)).all()}
    return found


async def insert_draw(
    engine: AsyncEngine,
    week: str,
    picked: Sequence[Candidate],
    seed: str,
    by: str,
    at: float | None = None,
) -> list[int]:
    """Record the drawn requests (ids of the new spot checks); raises Conflict if one of
    them was drawn meanwhile (nothing is recorded then)."""
    at = time.time() if at is None else at
    checks = tables.spot_checks
    ids: list[int] = []
    try:
        async with engine.begin() as conn:
            for item in picked:
                result = await conn.execute(
                    checks.insert().values(
                        week=week,
                        unit=item.unit,
                        request_id=item.id,
                        category=item.category,
                        seed=seed,
                        drawn_at=at,
                        drawn_by=by,
                    )
                )
                ids.append(int(result.inserted_primary_key[0]))  # type: ignore[index]
    except IntegrityError:
        raise Conflict("a request of this draw was drawn meanwhile: draw again") from None
    return ids


_CHECK_COLUMNS = (
    "id",
    "week",
    "unit",
    "request_id",
    "category",
    "seed",
    "drawn_at",
    "drawn_by",
    "outcome",
    "note",
    "outcome_at",
    "outcome_by",
)
_REQUEST_DETAIL = ("caller_phone", "address", "description", "result", "resolved_at", "squad")


async def spot_checks(
    engine: AsyncEngine,
    *,
    week: str | None = None,
    unit: str | None = None,
    check_id: int | None = None,
    with_outcome: bool = False,
) -> list[dict[str, Any]]:
    """Spot checks (by unit, then id), each with what the center needs for the callback
    (the caller's phone, the place, the description and the result reported)."""
    checks, requests = tables.spot_checks, tables.requests
    conditions: list[ColumnElement[bool]] = []
    if week is not None:
        conditions.append(checks.c.week == week)
    if unit is not None:
        conditions.append(checks.c.unit == unit)
    if check_id is not None:
        conditions.append(checks.c.id == check_id)
    if with_outcome:
        conditions.append(checks.c.outcome.is_not(None))
    query = (
        select(
            *(checks.c[name] for name in _CHECK_COLUMNS),
            *(requests.c[name] for name in _REQUEST_DETAIL),
        )
        .select_from(checks.outerjoin(requests, checks.c.request_id == requests.c.id))
        .where(*conditions)
        .order_by(checks.c.unit, checks.c.id)
    )
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def claim_outcome(
    engine: AsyncEngine, check_id: int, outcome: str, note: str, by: str, at: float
) -> bool:
    """Record the callback's outcome unless one is recorded; False if it was."""
    checks = tables.spot_checks
    statement = (
        update(checks)
        .where(checks.c.id == check_id, checks.c.outcome.is_(None))
        .values(outcome=outcome, note=note, outcome_at=at, outcome_by=by)
    )
    async with engine.begin() as conn:
        return (await conn.execute(statement)).rowcount == 1


async def release_outcome(engine: AsyncEngine, check_id: int, by: str) -> None:
    """Undo :func:`claim_outcome` of ``by`` (its consequence could not be carried out)."""
    checks = tables.spot_checks
    statement = (
        update(checks)
        .where(checks.c.id == check_id, checks.c.outcome_by == by)
        .values(outcome=None, note=None, outcome_at=None, outcome_by=None)
    )
    async with engine.begin() as conn:
        await conn.execute(statement)
