"""What the wall map shows, read from Redis, and the difference between two reads.

A squad travels as a compact row ``[id, unit, lat, lon, flags]`` (10,000 of them in a
snapshot: no field names repeated); ``flags`` has :data:`ON_DUTY` and :data:`BUSY`. A request
travels as the object ``GET /api/v1/map`` gives (open requests are hundreds, not tens of
thousands).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from server.deadlines import overdue_on_map

if TYPE_CHECKING:
    from server.components import Components as Services

ON_DUTY = 1
BUSY = 2

SquadRow = tuple[str, str, float, float, int]  # id, unit, lat, lon, flags
REQUEST_FIELDS = ("id", "category", "state", "squad", "district")


@dataclass
class MapState:
    at: float
    squads: dict[str, SquadRow] = field(default_factory=dict)
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """The figures the map itself gives: open and overdue requests."""
        overdue = sum(1 for r in self.requests.values() if r.get("overdue"))
        return {"open": len(self.requests), "overdue": overdue}


def squad_row(squad: dict[str, Any]) -> SquadRow:
    flags = (ON_DUTY if squad["on_duty"] else 0) | (BUSY if squad["busy"] else 0)
    return (squad["id"], squad["unit"], squad["lat"], squad["lon"], flags)


def request_item(unit: str, item: dict[str, str], now: float) -> dict[str, Any]:
    """An open request as the map shows it: where, what, and the deadline it missed."""
    missed = overdue_on_map(item, now)
    return {k: item[k] for k in REQUEST_FIELDS if k in item} | {
        "unit": unit,
        "lat": float(item["lat"]),
        "lon": float(item["lon"]),
        "received_at": float(item["received_at"]),
        # the deadline it missed (accept, arrive, resolve, promise) or None
        "overdue": missed.kind.value if missed else None,
        "overdue_since": round(missed.at, 3) if missed else None,
    }


async def read_requests(services: Services, now: float) -> dict[str, dict[str, Any]]:
    """Every open request of every unit, as the map shows it, by id."""
    found: dict[str, dict[str, Any]] = {}
    for unit in services.directory.unit_codes():
        for item in await services.requests.open_requests(unit):
            if "lat" in item and "lon" in item and "received_at" in item:
                shown = request_item(unit, item, now)
                found[shown["id"]] = shown
    return found


async def read_map(services: Services) -> MapState:
    """Every online squad with a position and every open request, of every unit."""
    now = time.time()
    state = MapState(now, requests=await read_requests(services, now))
    radius = services.settings.search_radius_km * 4
    for unit in services.directory.unit_codes():
        for squad in await services.squads.positions(unit, services.city.center, radius):
            row = squad_row(squad)
            state.squads[row[0]] = row
    return state


def snapshot(state: MapState) -> dict[str, Any]:
    """The whole map: the first message of a connection (and of a resync)."""
    return {
        "t": "snapshot",
        "at": round(state.at, 3),
        "squads": list(state.squads.values()),
        "requests": list(state.requests.values()),
    }


def delta(before: MapState, after: MapState) -> dict[str, Any]:
    """What changed from ``before`` to ``after``: squads new or changed (whole rows) and gone
    (ids), requests new or changed (whole objects) and closed (ids). Keys with nothing in them
    are left out: a quiet second is ``{"t": "delta", "at": …}``."""
    message: dict[str, Any] = {"t": "delta", "at": round(after.at, 3)}
    moved = [row for sid, row in after.squads.items() if before.squads.get(sid) != row]
    gone = [sid for sid in before.squads if sid not in after.squads]
    changed = [r for rid, r in after.requests.items() if before.requests.get(rid) != r]
    closed = [rid for rid in before.requests if rid not in after.requests]
    for key, value in (("squads", moved), ("gone", gone), ("requests", changed)):
        if value:
            message[key] = value
    if closed:
        message["closed"] = closed
    return message
