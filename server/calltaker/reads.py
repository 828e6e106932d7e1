"""Reads for the intake console, from the live state and the ledger.

* :meth:`Desk.caller_requests`: a caller's earlier requests, by phone number;
* :meth:`Desk.seat_requests`: the requests one call-taker recorded, newest first;
* :meth:`Desk.duplicate_candidates`: requests of a category near a point, received since.

The ledger has every request once its writer has recorded it (it follows Redis by well under
a second while it runs); the live state has the current state of every request it still
holds, and the open requests the ledger may not have yet. Each read takes the ledger's rows,
adds the live open requests received in the last :data:`LEDGER_LAG_S`, and overlays the live
state. The ledger being unreachable leaves the live part (``ledger=False`` in the answer;
the duplicate check then looks at the unit's open requests of its whole window).

Every read is bounded: rows asked of the ledger (``limit``), open requests looked at per
unit (:data:`LIVE_SCAN`). The open requests are probed for the one or three fields that
decide (the caller's number; category and place) before the matching ones are read whole:
at most four Redis round trips (the open sets, the probe, the matches, the ledger rows'
live state), each one pipeline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis
from sqlalchemy import Select, select
from sqlalchemy.exc import SQLAlchemyError

from server.calltaker.duplicates import Seen, box
from server.ledger import tables
from server.ledger.writer import Ledger
from server.lifecycle import State
from server.store import keys
from server.store.text import text

log = logging.getLogger(__name__)

LEDGER_LAG_S = 600.0  # live open requests this recent are read too (the ledger may lag)
LIVE_SCAN = 500  # most open requests read per unit and read
DESCRIPTION_SHOWN = 200  # characters of a description in a line

# The request hash fields a line or a duplicate check reads.
_LIVE_FIELDS = (
    "id",
    "category",
    "state",
    "route",
    "district",
    "address",
    "description",
    "caller_phone",
    "squad",
    "lat",
    "lon",
    "received_at",
)


class RequestLine(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One request in a list of the intake console."""

    id: str
    state: str
    received_at: float | None = None
    category: str = ""
    route: str = ""
    unit: str | None = None  # None: transferred (police, fire, medical)
    district: str = ""
    address: str = ""
    description: str = ""  # its first DESCRIPTION_SHOWN characters
    squad: str = ""
    lat: float | None = None
    lon: float | None = None


def phone_forms(phone: str) -> list[str]:
    """The forms a Chinese number is typed in: with or without +86 / 86."""
    bare = phone
    for prefix in ("+86", "86"):  # a local number has 7 digits or more after it
        if phone.startswith(prefix) and len(phone) - len(prefix) >= 7:
            bare = phone[len(prefix) :]
            break
    if bare.startswith("+"):  # another country's: as typed
        return [phone]
    return sorted({phone, bare, "+86" + bare, "86" + bare})


class Desk:
    """The reads of one API call: the app's Redis and ledger, the current units."""

    def __init__(self, redis: Redis, ledger: Ledger | None, units: Callable[[], list[str]]):
        self._redis = redis
        self._ledger = ledger
        self._units = units

    # ---- the three reads ---------------------------------------------------------------

    async def caller_requests(
        self, phone: str, limit: int, now: float | None = None
    ) -> tuple[list[RequestLine], bool]:
        """The caller's requests, newest first (at most ``limit``), and whether the ledger
        was read."""
        forms = phone_forms(phone)
        requests = tables.requests
        query = (
            _lines_select()
            .where(requests.c.caller_phone.in_(forms))
            .order_by(requests.c.received_at.desc())
            .limit(limit)
        )
        rows, read = await self._ledger_rows(query)
        since = (now or time.time()) - LEDGER_LAG_S
        live = await self._recent_open(
            self._units(), since, ("caller_phone",), lambda probe: probe[0] in forms
        )
        return await self._merged(rows, live, limit), read

    async def seat_requests(self, by: str, limit: int) -> tuple[list[RequestLine], bool]:
        """The requests recorded by ``by`` (an actor label, ``calltaker:alice``), newest
        first; the live state of each. What the ledger has not recorded yet is not here
        (the console keeps what it sent itself until it is)."""
        requests, events = tables.requests, tables.events
        query = (
            _lines_select()
            .join(events, events.c.request_id == requests.c.id)
            .where(events.c.by == by, events.c.type == "received")
            .order_by(events.c.at.desc())
            .limit(limit)
        )
        rows, read = await self._ledger_rows(query)
        return await self._merged(rows, [], limit), read

    async def duplicate_candidates(
        self,
        unit: str | None,
        category: str,
        lat: float,
        lon: float,
        radius_m: float,
        since: float,
        now: float | None = None,
    ) -> tuple[list[Seen], bool]:
        """Requests of ``category`` received since ``since`` in a box around the circle of
        ``radius_m`` about (lat, lon): the ledger's, and ``unit``'s live open ones (None: a
        transfer, in no unit's open set); the exact rule is :func:`possible_duplicates`'."""
        requests = tables.requests
        min_lat, min_lon, max_lat, max_lon = box(lat, lon, radius_m)
        query = (
            _lines_select()
            .where(
                requests.c.category == category,
                requests.c.received_at >= since,
                requests.c.lat.between(min_lat, max_lat),
                requests.c.lon.between(min_lon, max_lon),
                requests.c.state != State.CANCELLED.value,
            )
            .order_by(requests.c.received_at.desc())
            .limit(LIVE_SCAN)
        )
        rows, read = await self._ledger_rows(query)
        live: list[dict[str, str]] = []
        if unit:
            # The ledger has what is older than its lag; without it, the whole window.
            recent = max(since, (now or time.time()) - LEDGER_LAG_S) if read else since

            def near(probe: list[str]) -> bool:
                found, at_lat, at_lon = probe
                return (
                    found == category
                    and min_lat <= float(at_lat or "nan") <= max_lat
                    and (min_lon <= float(at_lon or "nan") <= max_lon)
                )

            live = await self._recent_open([unit], recent, ("category", "lat", "lon"), near)
        lines = await self._merged(rows, live, len(rows) + len(live))
        seen = [
            Seen(
                id=line.id,
                category=line.category,
                lat=line.lat,
                lon=line.lon,
                received_at=line.received_at,
                state=line.state,
                unit=line.unit or "",
                district=line.district,
                address=line.address,
            )
            for line in lines
            if line.lat is not None and line.lon is not None and line.received_at is not None
        ]
        return seen, read

    # ---- the parts ---------------------------------------------------------------------

    async def _ledger_rows(self, query: Select[Any]) -> tuple[list[dict[str, Any]], bool]:
        if self._ledger is None:
            return [], False
        try:
            async with self._ledger.engine.connect() as conn:
                return [dict(row) for row in (await conn.execute(query)).mappings()], True
        except (SQLAlchemyError, OSError) as exc:
            log.warning("intake console: the ledger is unreachable (%s): live state only", exc)
            return [], False

    async def _recent_open(
        self,
        units: Iterable[str],
        since: float,
        probe: Sequence[str],
        wanted: Callable[[list[str]], bool],
    ) -> list[dict[str, str]]:
        """The open requests of ``units`` received since ``since`` (at most LIVE_SCAN per
        unit) whose ``probe`` fields (as text, "" if unset) are ``wanted``, as their hash
        fields plus ``unit``."""
        units = list(units)
        pipe = self._redis.pipeline(transaction=False)
        for unit in units:
            pipe.zrangebyscore(keys.open_requests(unit), since, "+inf", start=0, num=LIVE_SCAN)
        found = [
            (unit, text(request_id))
            for unit, ids in zip(units, await pipe.execute(), strict=True)
            for request_id in ids
        ]
        if not found:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for unit, request_id in found:
            pipe.hmget(keys.request(unit, request_id), list(probe))
        probed = await pipe.execute()
        matching = [
            where
            for where, values in zip(found, probed, strict=True)
            if wanted([text(v) if v is not None else "" for v in values])
        ]
        return await self._hashes(matching, _LIVE_FIELDS)

    async def _hashes(
        self, found: Sequence[tuple[str, str]], fields: Sequence[str]
    ) -> list[dict[str, str]]:
        if not found:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for unit, request_id in found:
            pipe.hmget(keys.request(unit, request_id), list(fields))
        rows = await pipe.execute()
        return [
            {name: text(value) for name, value in zip(fields, row, strict=True) if value}
            | {"unit": unit}
            for (unit, _), row in zip(found, rows, strict=True)
            if row[0] is not None
        ]

    async def _merged(
        self, rows: list[dict[str, Any]], live: list[dict[str, str]], limit: int
    ) -> list[RequestLine]:
        """The ledger's rows with the live state laid over them, and the live requests the
        ledger does not have; newest first, at most ``limit``."""
        lines = {row["id"]: _line(row) for row in rows}
        overlay = await self._hashes(
            [(row["unit"], row["id"]) for row in rows], ("id", "state", "squad")
        )
        for fields in overlay:
            line = lines[fields["id"]]
            lines[line.id] = msgspec.structs.replace(
                line, state=fields.get("state", line.state), squad=fields.get("squad", "")
            )
        for fields in live:
            lines[fields["id"]] = _line(fields)
        ordered = sorted(lines.values(), key=lambda line: -(line.received_at or 0.0))
        return ordered[:limit]


def _lines_select() -> Select[Any]:
    requests = tables.requests
    return select(
        requests.c.id,
        requests.c.unit,
        requests.c.state,
        requests.c.received_at,
        requests.c.category,
        requests.c.route,
        requests.c.district,
        requests.c.address,
        requests.c.description,
        requests.c.squad,
        requests.c.lat,
        requests.c.lon,
    )


def _line(row: dict[str, Any]) -> RequestLine:
    """A ledger row or a request hash's fields (text) as a line."""
    unit = row.get("unit") or ""

    def number(name: str) -> float | None:
        value = row.get(name)
        return None if value in (None, "") else float(value)

    return RequestLine(
        id=str(row["id"]),
        state=str(row.get("state") or ""),
        received_at=number("received_at"),
        category=row.get("category") or "",
        route=row.get("route") or "",
        unit=None if unit in ("", keys.NO_UNIT) else unit,
        district=row.get("district") or "",
        address=row.get("address") or "",
        description=(row.get("description") or "")[:DESCRIPTION_SHOWN],
        squad=row.get("squad") or "",
        lat=number("lat"),
        lon=number("lon"),
    )
