"""HTTP API of the intake console (``/intake.html``), under ``/api/v1``:

* ``POST /callers/history``: a caller's earlier requests. POST with the number in the body,
  not ``GET /callers/{phone}``: a path is written to every access log on the way (the hub's
  drops only query strings, a proxy in front keeps whole URLs), and a caller's number is
  personal data that belongs in no log.
* ``POST /requests/preview``: what intake would do with a request (the same triage, by
  :meth:`server.actions.Intake.triage`) and its possible duplicates; records nothing.
* ``GET /places?q=``: the gazetteer (:mod:`server.city.places`); a place name is public.
* ``GET /intake/recent``: the signed-in call-taker's own recent requests with their live
  state, polled by the console (call-takers do not watch the center feed: it carries every
  unit's events, far more than one seat's requests).
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dispatch_field import protocol
from server.actions import IntakeError
from server.api.common import (
    ApiError,
    authorize,
    components,
    json_response,
    read_body,
    read_query,
)
from server.api.openapi import described
from server.calltaker.duplicates import possible_duplicates
from server.calltaker.reads import Desk, RequestLine
from server.city.places import Place, PlacesError, places_for_city
from server.store import keys

log = logging.getLogger(__name__)

Phone = Annotated[str, Meta(pattern=r"^\+?[0-9]{3,20}$")]  # as NewRequest.caller_phone


class CallerLookup(msgspec.Struct, forbid_unknown_fields=True):
    phone: Phone
    limit: Annotated[int, Meta(ge=1, le=50)] = 10


class Lines(msgspec.Struct):
    requests: list[RequestLine]  # newest first
    ledger: bool  # the ledger was read (false: unreachable, only the live state)


class PreviewBody(msgspec.Struct, forbid_unknown_fields=True):
    """What triage and the duplicate check need of a request about to be sent."""

    category: Annotated[str, Meta(min_length=1, max_length=64)]
    lat: protocol.Lat
    lon: Annotated[float, Meta(ge=-180.0, le=180.0)]


class Duplicate(msgspec.Struct):
    id: str
    category: str
    state: str
    distance_m: float
    received_at: float
    unit: str | None
    district: str
    address: str
    lat: float
    lon: float


class Preview(msgspec.Struct):
    route: str  # "linkage", or the service it goes to (police, fire, medical)
    unit: str | None  # None: transferred
    district: str | None
    duplicates: list[Duplicate]  # nearest first
    radius_m: float  # the duplicate rule: the same category within radius_m ...
    window_s: float  # ... received within window_s
    ledger: bool  # the ledger was read for duplicates (false: only the live state)


class PlaceQuery(msgspec.Struct, forbid_unknown_fields=True):
    q: Annotated[str, Meta(min_length=1, max_length=50)]
    limit: Annotated[int, Meta(ge=1, le=20)] = 8


class RecentQuery(msgspec.Struct, forbid_unknown_fields=True):
    limit: Annotated[int, Meta(ge=1, le=50)] = 20


def _desk(request: Request) -> Desk:
    services = components(request)
    return Desk(services.redis, services.ledger, services.directory.unit_codes)


@described(
    summary="A caller's earlier requests, newest first (the number in the body, not the URL)",
    roles=("calltaker", "center"),
    body=CallerLookup,
    answer=Lines,
)
async def caller_history(request: Request) -> Response:
    authorize(request, "calltaker", "center")
    lookup = await read_body(request, CallerLookup)
    lines, read = await _desk(request).caller_requests(lookup.phone, lookup.limit)
    return json_response(Lines(lines, read))


@described(
    summary="What intake would do with a request (triage, possible duplicates); records nothing",
    roles=("calltaker", "center"),
    body=PreviewBody,
    answer=Preview,
)
async def preview(request: Request) -> Response:
    authorize(request, "calltaker", "center")
    body = await read_body(request, PreviewBody)
    services = components(request)
    try:
        route, district, unit = services.intake.triage(body)
    except IntakeError as exc:
        raise ApiError(422, exc.code, exc.message, exc.fields) from None
    settings = services.settings
    radius, window = settings.duplicate_radius_m, settings.duplicate_window_s * settings.time_scale
    now = time.time()
    live_unit = unit if unit != keys.NO_UNIT else None
    seen, read = await _desk(request).duplicate_candidates(
        live_unit, body.category, body.lat, body.lon, radius, now - window, now
    )
    found = possible_duplicates(
        body.category, body.lat, body.lon, seen, now=now, radius_m=radius, window_s=window
    )
    duplicates = [
        Duplicate(
            id=p.seen.id,
            category=p.seen.category,
            state=p.seen.state,
            distance_m=round(p.distance_m, 1),
            received_at=p.seen.received_at,
            unit=p.seen.unit or None,
            district=p.seen.district,
            address=p.seen.address,
            lat=p.seen.lat,
            lon=p.seen.lon,
        )
        for p in found[:20]
    ]
    return json_response(
        Preview(
            route=route,
            unit=live_unit,
            district=district or None,
            duplicates=duplicates,
            radius_m=radius,
            window_s=window,
            ledger=read,
        )
    )


@described(
    summary="Places of the city's gazetteer matching a name, pinyin, initials or English",
    roles=("calltaker", "center"),
    query=PlaceQuery,
    answer=list[Place],
    errors=(503,),
)
async def places(request: Request) -> Response:
    authorize(request, "calltaker", "center")
    query = read_query(request, PlaceQuery)
    try:
        gazetteer = places_for_city(components(request).settings.config_path)
    except PlacesError as exc:
        log.error("the gazetteer cannot be read: %s", exc)
        raise ApiError(503, "unavailable", "the gazetteer cannot be read") from None
    return json_response(gazetteer.search(query.q, query.limit))


@described(
    summary="The signed-in call-taker's own recent requests, with their live state",
    roles=("calltaker",),
    query=RecentQuery,
    answer=Lines,
)
async def recent(request: Request) -> Response:
    actor = authorize(request, "calltaker")
    query = read_query(request, RecentQuery)
    lines, read = await _desk(request).seat_requests(actor.label(), query.limit)
    return json_response(Lines(lines, read))


def intake_routes() -> list[Route]:
    prefix = "/api/v1"
    return [
        Route(f"{prefix}/callers/history", caller_history, methods=["POST"]),
        Route(f"{prefix}/requests/preview", preview, methods=["POST"]),
        Route(f"{prefix}/places", places, methods=["GET"]),
        Route(f"{prefix}/intake/recent", recent, methods=["GET"]),
    ]


__all__ = ["intake_routes"]
