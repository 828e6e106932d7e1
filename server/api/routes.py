"""HTTP API under ``/api/v1``: JSON; a bearer token or a session cookie names a person with
a role (see :mod:`server.accounts`).

Every error is ``{"error": {"code", "message", "fields"}}`` with a precise 4xx status;
``fields`` maps each offending field to the reason.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.accounts.asgi import auth_result
from server.actions import IntakeError, NewRequest
from server.api.answers import (
    Anything,
    Health,
    IntakeAnswer,
    LiveMap,
    RequestDetail,
    Rows,
    SquadCreated,
)
from server.api.common import (
    ApiError,
    Code,
    authorize,
    components,
    invalid,
    json_response,
    ledger_of,
    read_body,
    require_unit,
)
from server.api.openapi import described
from server.api.openapi import document as openapi_document
from server.city import Category, Unit
from server.ledger import (
    audit_trail,
    export_csv,
    find_requests,
    record_audit,
    request_events,
)
from server.store import keys
from server.store.requests import Actor, IdempotencyKeyReused
from server.wallmap.state import read_requests


class NewSquad(msgspec.Struct, forbid_unknown_fields=True):
    unit: Code
    name: Annotated[str, Meta(min_length=1, max_length=100)]
    capacity: Annotated[int, Meta(ge=1, le=20)] | None = None
    skills: list[Code] = []


class NewUnit(msgspec.Struct, forbid_unknown_fields=True):
    code: Code
    name_zh: Annotated[str, Meta(min_length=1, max_length=100)]
    name_en: Annotated[str, Meta(min_length=1, max_length=100)]
    categories: Annotated[list[Code], Meta(min_length=1)]
    districts: Annotated[list[Code], Meta(min_length=1)]
    squad_capacity: Annotated[int, Meta(ge=1, le=20)] = 1


# ---- reference data -----------------------------------------------------------------------


@described(
    summary="Liveness (details for admin and center)",
    roles=(),
    answer=Health,
    errors=(503,),
)
async def health(request: Request) -> Response:
    """Liveness for anyone; the details (hub id, counters) for admin and center only: the hub
    id names the host and process."""
    services = components(request)
    try:
        redis_ok = bool(await services.redis.ping())
    except Exception:  # noqa: BLE001 - health reports, it does not fail
        redis_ok = False
    body: dict[str, Any] = {"status": "ok" if redis_ok else "degraded"}
    principal = auth_result(request).principal
    if principal is not None and principal.role in ("admin", "center"):
        body |= {
            "hub": services.hub.id,
            "redis": redis_ok,
            "squads_connected": len(services.hub.sessions),
            "positions_written": services.positions.written,
            "redis_round_trips": services.round_trips.count,
        }
    return json_response(body, 200 if redis_ok else 503)


@described(
    summary="The city's request categories with their limits",
    roles=("calltaker", "center", "wall", "unit"),
    answer=list[Category],
)
async def categories(request: Request) -> Response:
    authorize(request, "calltaker", "center", "wall", "unit")
    return json_response([msgspec.structs.asdict(c) for c in components(request).city.categories])


@described(
    summary="The units (departments and companies)",
    roles=("calltaker", "center", "wall", "unit"),
    answer=list[Unit],
)
async def units(request: Request) -> Response:
    authorize(request, "calltaker", "center", "wall", "unit")
    return json_response([msgspec.structs.asdict(u) for u in components(request).city.units])


@described(
    summary="The districts with their boundaries (GeoJSON) and depots",
    roles=("calltaker", "center", "wall", "unit"),
    answer=Rows,
)
async def districts(request: Request) -> Response:
    authorize(request, "calltaker", "center", "wall", "unit")
    return json_response(
        [
            {
                "code": d.code,
                "name_zh": d.name_zh,
                "name_en": d.name_en,
                "boundary": msgspec.structs.asdict(d.boundary),
                "depots": d.depots,
            }
            for d in components(request).city.districts
        ]
    )


# ---- administration -----------------------------------------------------------------------


@described(
    summary="Add a unit; it takes over routing for its categories and districts",
    roles=("admin",),
    body=NewUnit,
    answer=Unit,
    status=201,
    errors=(409,),
)
async def create_unit(request: Request) -> Response:
    authorize(request, "admin")
    new = await read_body(request, NewUnit)
    services = components(request)
    city = services.city
    if city.unit(new.code) is not None:
        raise ApiError(409, "exists", f"unit {new.code} exists", {"code": "already taken"})
    for code in new.categories:
        category = city.category(code)
        if category is None or category.route != "linkage":
            raise ApiError(
                422,
                "unknown_category",
                f"{code} is not a linkage category",
                {"categories": f"unknown or not dispatched: {code}"},
            )
    for code in new.districts:
        if city.district(code) is None:
            raise ApiError(
                422, "unknown_district", f"no district {code}", {"districts": f"unknown: {code}"}
            )
    unit = msgspec.convert(msgspec.structs.asdict(new), Unit)
    await services.directory.add(unit)
    return json_response(msgspec.structs.asdict(unit), 201)


@described(
    summary="Register a squad; the answer carries its token, once",
    roles=("admin",),
    body=NewSquad,
    answer=SquadCreated,
    status=201,
)
async def create_squad(request: Request) -> Response:
    authorize(request, "admin")
    new = await read_body(request, NewSquad)
    services = components(request)
    unit = services.city.unit(new.unit)
    if unit is None:
        raise ApiError(422, "unknown_unit", f"no unit {new.unit}", {"unit": "unknown unit"})
    for skill in new.skills:
        if skill not in unit.categories:
            raise ApiError(
                422,
                "invalid",
                f"{unit.code} does not handle {skill}",
                {"skills": f"not a category of unit {unit.code}: {skill}"},
            )
    capacity = new.capacity or unit.squad_capacity or services.settings.squad_capacity
    squad_id, token = await services.squads.create(unit.code, new.name, capacity, new.skills)
    return json_response(
        {
            "id": squad_id,
            "unit": unit.code,
            "name": new.name,
            "capacity": capacity,
            "skills": new.skills or ["*"],
            "token": token,
        },
        201,
    )


@described(
    summary="A squad: online, on duty, position, active assignments",
    roles=("center", "unit"),
    answer=Anything,
    errors=(404,),
)
async def squad_detail(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    services = components(request)
    squad_id = request.path_params["squad_id"]
    unit = await services.squads.unit_of(squad_id)
    require_unit(actor, unit)
    described = await services.squads.describe(unit, squad_id) if unit else None
    if described is None:
        raise ApiError(404, "not_found", f"no squad {squad_id}")
    return json_response(described)


# ---- requests -----------------------------------------------------------------------------


_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


@described(
    summary="Record a request (triage, unit, dispatch in one step)",
    roles=("calltaker",),
    body=NewRequest,
    answer=IntakeAnswer,
    status=201,
    errors=(409, 503),
)
async def create_request(request: Request) -> Response:
    """Record a request. An ``Idempotency-Key`` header makes a retry (after a timeout or a
    503) return the request the first attempt made, with status 200, instead of a twin. The
    key is the caller's own; reused for a different body it is a 409 and records nothing."""
    actor = authorize(request, "calltaker")
    key = request.headers.get("idempotency-key")
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        reason = "1 to 100 characters of letters, digits and . _ : -"
        raise ApiError(422, "invalid", f"Idempotency-Key: {reason}", {"Idempotency-Key": reason})
    new = await read_body(request, NewRequest)
    try:
        created = await components(request).intake.create(new, actor, key)
    except IntakeError as exc:
        raise ApiError(422, exc.code, exc.message, exc.fields) from None
    except IdempotencyKeyReused:
        raise _key_reused() from None
    return json_response(created, 200 if created.pop("replayed", False) else 201)


def _key_reused() -> ApiError:
    # The first request's id is not told: the key may have been guessed.
    reason = "used before by you for a different request; a new request needs a new key"
    return ApiError(
        409, "idempotency_key_reused", f"Idempotency-Key: {reason}", {"Idempotency-Key": reason}
    )


@described(
    summary="A request: state, unit, squad, deadlines, timeline",
    roles=("calltaker", "center", "unit"),
    answer=RequestDetail,
    errors=(404,),
)
async def request_detail(request: Request) -> Response:
    actor = authorize(request, "calltaker", "center", "unit")
    services = components(request)
    request_id = request.path_params["request_id"]
    unit = await services.requests.unit_of(request_id)
    require_unit(actor, unit)
    record = await services.requests.read(unit, request_id) if unit else None
    if unit is None or record is None:
        raise ApiError(404, "not_found", f"no request {request_id}")
    body: dict[str, Any] = {
        k: v for k, v in msgspec.structs.asdict(record).items() if k != "v" and v is not None
    }
    body["unit"] = None if unit == keys.NO_UNIT else unit
    body["deadlines"] = {k: body.pop(k, None) for k in ("accept_by", "arrive_by", "resolve_by")}
    body["timeline"] = await services.requests.timeline(unit, request_id)
    return json_response(body)


@described(
    summary="Online squads and open requests (the wall map)",
    roles=("wall", "center", "calltaker"),
    answer=LiveMap,
)
async def live_map(request: Request) -> Response:
    """What the wall map draws: every online squad and every open request (the live wall
    takes the same, as deltas, from ``/ws/map``: server.wallmap)."""
    authorize(request, "wall", "center", "calltaker")
    services = components(request)
    radius = services.settings.search_radius_km * 4
    squads: list[dict[str, Any]] = []
    now = time.time()
    for unit in services.directory.unit_codes():
        squads += await services.squads.positions(unit, services.city.center, radius)
    requests = list((await read_requests(services, now)).values())
    return json_response({"at": now, "squads": squads, "requests": requests})


# ---- ledger ------------------------------------------------------------------------------


# Finite and within the database's numbers: "inf", "nan" and 2**63 are a 422, not a 500.
EpochSeconds = Annotated[float, Meta(ge=0, le=1e11)]


class LedgerQuery(msgspec.Struct, forbid_unknown_fields=True):
    """Filters of the ledger endpoints (query string)."""

    unit: Code | None = None
    category: Code | None = None
    district: Code | None = None
    state: Annotated[str, Meta(pattern=r"^[a-z_]+$")] | None = None
    since: EpochSeconds | None = None
    until: EpochSeconds | None = None
    limit: Annotated[int, Meta(ge=1, le=10_000)] = 100
    offset: Annotated[int, Meta(ge=0, le=1_000_000)] = 0  # deeper pages: narrow by time


def _ledger_query(request: Request, actor: Actor | None = None) -> LedgerQuery:
    """The query's filters; a unit desk's are its own unit's (another unit is a 403)."""
    try:
        query = msgspec.convert(dict(request.query_params), LedgerQuery, strict=False)
    except msgspec.ValidationError as exc:
        raise invalid(exc) from None
    if actor is not None and actor.kind == "unit":
        require_unit(actor, query.unit or actor.unit)
        query.unit = actor.unit
    return query


@described(
    summary="The ledger: requests by unit, category, district, state, time",
    roles=("center", "unit"),
    query=LedgerQuery,
    answer=Rows,
    errors=(422, 503),
)
async def ledger_requests(request: Request) -> Response:
    """Requests from the ledger, filtered by unit, category, district, state and time."""
    actor = authorize(request, "center", "unit")
    query = msgspec.structs.asdict(_ledger_query(request, actor))
    return json_response(await find_requests(ledger_of(request), **query))


@described(
    summary="Every recorded event of a request",
    roles=("center", "unit"),
    answer=Rows,
    errors=(503,),
)
async def ledger_events(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    events = await request_events(ledger_of(request), request.path_params["request_id"])
    for unit in {event["unit"] for event in events}:
        require_unit(actor, unit)
    return json_response(events)


@described(
    summary="The ledger as CSV (UTF-8 with BOM); the export is recorded",
    roles=("center", "unit"),
    query=LedgerQuery,
    answer=str,
    media_type="text/csv",
    errors=(422, 503),
)
async def ledger_export(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    query = msgspec.structs.asdict(_ledger_query(request, actor))
    query["limit"] = None if "limit" not in request.query_params else query["limit"]
    ledger = ledger_of(request)
    text = await export_csv(ledger, **query)
    # An export takes callers' data out of the system: the record says who, when, what.
    await record_audit(
        ledger,
        actor.label(),
        "ledger_export",
        {"filters": {k: v for k, v in query.items() if v is not None}, "bytes": len(text.encode())},
    )
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="ledger.csv"'},
    )


class AuditQuery(msgspec.Struct, forbid_unknown_fields=True):
    action: Code | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100


@described(
    summary="Who exported the ledger, when, with which filters",
    roles=("admin",),
    query=AuditQuery,
    answer=Rows,
    errors=(422,),
)
async def audit(request: Request) -> Response:
    """Who exported the record (and, as the product grows, other actions on the record)."""
    authorize(request, "admin")
    try:
        query = msgspec.convert(dict(request.query_params), AuditQuery, strict=False)
    except msgspec.ValidationError as exc:
        raise invalid(exc) from None
    return json_response(await audit_trail(ledger_of(request), query.action, query.limit))


@described(
    summary="This document: the HTTP API as OpenAPI 3.1",
    roles=("calltaker", "center", "unit", "wall"),
    answer=Anything,
)
async def openapi_json(request: Request) -> Response:
    authorize(request, "calltaker", "center", "unit", "wall")
    return json_response(openapi_document(request.app.routes))


# ---- wiring -------------------------------------------------------------------------------


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def api_routes() -> list[Route]:
    prefix = "/api/v1"
    return [
        Route(f"{prefix}/health", health),
        Route(f"{prefix}/audit", audit),
        Route(f"{prefix}/openapi.json", openapi_json),
        Route(f"{prefix}/categories", categories),
        Route(f"{prefix}/units", units, methods=["GET"]),
        Route(f"{prefix}/units", create_unit, methods=["POST"]),
        Route(f"{prefix}/districts", districts),
        Route(f"{prefix}/squads", create_squad, methods=["POST"]),
        Route(f"{prefix}/squads/{{squad_id}}", squad_detail),
        Route(f"{prefix}/requests", create_request, methods=["POST"]),
        Route(f"{prefix}/requests/{{request_id}}", request_detail),
        Route(f"{prefix}/map", live_map),
        Route(f"{prefix}/ledger/requests", ledger_requests),
        Route(f"{prefix}/ledger/requests/{{request_id}}/events", ledger_events),
        Route(f"{prefix}/ledger/export.csv", ledger_export),
    ]


__all__ = ["api_routes"]
