"""What the center console needs beyond the supervision API: a request's squad tracks for
its map, and the squads that went offline while holding work.

- ``GET /api/v1/requests/{request_id}/track``: the scene and, per squad that held the
  request, the points of its track while it held it (see :mod:`server.store.tracks`);
- ``GET /api/v1/center/offline-squads?unit=&limit=``: squads offline while holding accepted
  work, longest offline first, each with its requests and its last known point.

Roles center (every unit) and unit (a desk: its own unit only; another unit is a 403).
Both are bounded: the segments of a track, the points of a segment, the open items scanned.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api.common import (
    ApiError,
    Code,
    authorize,
    components,
    json_response,
    read_query,
    require_unit,
)
from server.api.openapi import described
from server.lifecycle import HELD, STATE_AFTER_EVENT, State
from server.store import keys
from server.store.text import text
from server.store.tracks import last_points, track_between

MAX_SEGMENTS = 20  # a request held by more squads than this shows the newest ones
OPEN_SCAN = 2000  # open items read per unit for the offline squads
# States in which a squad's silence matters to the center (an offer is passed on by itself).
WORKING = frozenset(HELD - {State.OFFERED})


# ---- answers ------------------------------------------------------------------------------


class Scene(msgspec.Struct):
    lat: float
    lon: float


class TrackSegment(msgspec.Struct):
    """One squad's hold on the request: from its first step to the step that released it
    (``until`` null: it holds it still)."""

    squad: str
    unit: str | None  # None: the squad is no longer registered
    name: str  # "" when it is no longer registered
    since: float
    until: float | None
    points: list[tuple[float, float, float]]  # [lat, lon, at], oldest first


class RequestTrack(msgspec.Struct):
    request: str
    unit: str
    scene: Scene
    interval_s: float  # a holding squad's track has one point per this (at most)
    segments: list[TrackSegment]


class OfflineJob(msgspec.Struct):
    id: str
    state: str
    category: str


class LastPoint(msgspec.Struct):
    lat: float
    lon: float
    at: float


class OfflineSquad(msgspec.Struct):
    squad: str
    unit: str
    name: str
    last_seen: float | None  # when its connection ended (None: unknown)
    requests: list[OfflineJob]
    last_point: LastPoint | None  # the newest point of its track, if one is kept


class OfflineQuery(msgspec.Struct, forbid_unknown_fields=True):
    unit: Code | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 200


# ---- the track of a request ---------------------------------------------------------------


def hold_segments(timeline: list[dict[str, Any]], now: float) -> list[tuple[str, float, float]]:
    """(squad, since, until) for each time a squad held the request, from its events: a step
    that leaves the request with a squad (offered, accepted, …) starts a squad's hold, a step
    that leaves it with none (queued, disputed, reassigned, resolved, …) ends it. A hold not
    ended yet runs to ``now``. Pure."""
    segments: list[tuple[str, float, float]] = []
    holder: tuple[str, float] | None = None
    for event in timeline:
        state = STATE_AFTER_EVENT.get(str(event.get("type", "")))
        if state is None:
            continue  # notes, notices, messages, squad_offline: no change of hands
        at = float(event.get("at", 0.0))
        squad = str(event.get("squad") or "")
        if holder is not None and (state not in HELD or (squad and squad != holder[0])):
            segments.append((holder[0], holder[1], at))
            holder = None
        if holder is None and state in HELD and squad:
            holder = (squad, at)
    if holder is not None:
        segments.append((holder[0], holder[1], now))
    return segments[-MAX_SEGMENTS:]


@described(
    summary="A request's scene and the tracks of the squads that held it, for its map",
    roles=("center", "unit"),
    answer=RequestTrack,
    errors=(404,),
)
async def request_track(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    services = components(request)
    request_id = request.path_params["request_id"]
    unit = await services.requests.unit_of(request_id)
    require_unit(actor, unit)
    record = await services.requests.read(unit, request_id) if unit else None
    if unit is None or unit == keys.NO_UNIT or record is None:
        raise ApiError(404, "not_found", f"no request {request_id} in a unit")
    now = time.time()
    timeline = await services.requests.timeline(unit, request_id)
    segments = hold_segments(timeline, now)
    held_now = record.state in HELD
    limit = services.settings.track_points
    answer: list[dict[str, Any]] = []
    squad_units: dict[str, str | None] = {}
    for squad, _, _ in segments:
        if squad not in squad_units:
            squad_units[squad] = await services.squads.unit_of(squad)
    registered = [(u, squad) for squad, u in squad_units.items() if u is not None]
    names = dict(zip(registered, await services.squads.names(registered), strict=True))
    for index, (squad, since, until) in enumerate(segments):
        squad_unit = squad_units[squad]
        points = (
            await track_between(services.redis, squad_unit, squad, since, until, limit)
            if squad_unit
            else []
        )
        still = held_now and index == len(segments) - 1
        answer.append(
            {
                "squad": squad,
                "unit": squad_unit,
                "name": names.get((squad_unit, squad), "") if squad_unit else "",
                "since": since,
                "until": None if still else until,
                "points": points,
            }
        )
    return json_response(
        {
            "request": request_id,
            "unit": unit,
            "scene": {"lat": record.lat, "lon": record.lon},
            "interval_s": services.settings.track_interval_s,
            "segments": answer,
        }
    )


# ---- squads offline while holding work -----------------------------------------------------


@described(
    summary="Squads offline while holding accepted work, longest offline first",
    roles=("center", "unit"),
    query=OfflineQuery,
    answer=list[OfflineSquad],
    errors=(422,),
)
async def offline_squads(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    query = read_query(request, OfflineQuery)
    services = components(request)
    if actor.kind == "unit":
        require_unit(actor, query.unit or actor.unit)
        units = [actor.unit]
    elif query.unit is not None:
        if services.city.unit(query.unit) is None:
            raise ApiError(422, "unknown_unit", f"no unit {query.unit}", {"unit": "unknown unit"})
        units = [query.unit]
    else:
        units = services.directory.unit_codes()
    held: dict[tuple[str, str], list[dict[str, str]]] = {}
    for unit in units:
        for item in await services.requests.open_requests(unit, OPEN_SCAN):
            if item.get("squad") and item.get("state") in WORKING:
                job = {"id": item["id"], "state": item["state"], "category": item["category"]}
                held.setdefault((unit, item["squad"]), []).append(job)
    if not held:
        return json_response([])
    pairs = list(held)
    pipe = services.redis.pipeline(transaction=False)
    for unit, squad in pairs:
        pipe.hmget(keys.squad(unit, squad), ["online", "name", "last_seen"])
    states = await pipe.execute()
    offline = [
        (pair, text(name), float(text(seen)) if seen else None)
        for pair, (online, name, seen) in zip(pairs, states, strict=True)
        if text(online) != "1"
    ]
    offline.sort(key=lambda o: (o[2] if o[2] is not None else 0.0, o[0]))
    offline = offline[: query.limit]
    points = await last_points(services.redis, [pair for pair, _, _ in offline])
    return json_response(
        [
            {
                "squad": squad,
                "unit": unit,
                "name": name,
                "last_seen": seen,
                "requests": held[(unit, squad)],
                "last_point": (
                    {"lat": point[0], "lon": point[1], "at": point[2]} if point else None
                ),
            }
            for ((unit, squad), name, seen), point in zip(offline, points, strict=True)
        ]
    )


def console_routes() -> list[Route]:
    prefix = "/api/v1"
    return [
        Route(f"{prefix}/requests/{{request_id}}/track", request_track),
        Route(f"{prefix}/center/offline-squads", offline_squads),
    ]
