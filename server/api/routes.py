"""HTTP API under ``/api/v1``: JSON; a bearer token or a session cookie names a person with
a role (see :mod:`server.accounts`).

Every error is ``{"error": {"code", "message", "fields"}}`` with a precise 4xx status;
``fields`` maps each offending field to the reason.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dispatch_field.codes import CloseCode
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
    SquadRow,
    SquadToken,
)
from server.api.common import (
    ApiError,
    Code,
    authorize,
    components,
    json_response,
    read_body,
    read_query,
    require_unit,
    units_in_view,
)
from server.api.ledger import archived_detail, ledger_routes
from server.api.openapi import described
from server.api.openapi import document as openapi_document
from server.api.operations import redis_answers
from server.city import Category, Unit
from server.store import keys
from server.store.requests import IdempotencyKeyReused
from server.wallmap.state import read_requests

log = logging.getLogger(__name__)


# A name people read (on the console, the wall, a squad's phone): words, not blank, no NUL.
Name = Annotated[
    str, Meta(min_length=1, max_length=100, pattern=r"^(?=[^\x00]*$)\s*\S", description="words")
]


# Characters a name may not hold: controls, format characters (the bidirectional overrides
# that turn the text, and the id beside it, around; zero-width ones), private or lone
# surrogate code points, line and paragraph separators; and the blanks that count as letters.
_UNSEEN = frozenset({"Cc", "Cf", "Co", "Cs", "Zl", "Zp"})
_BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_MARKS_IN_A_ROW = 3  # combining marks on one letter (Vietnamese uses two)


def unreadable(name: str) -> str | None:
    """Why people could not read ``name`` as the squad's, or None: a character one cannot
    see or that turns the text around, no letter or digit, a pile of combining marks."""
    marks = 0
    for char in name:
        category = unicodedata.category(char)
        if category in _UNSEEN or char in _BLANKS:
            return f"holds an invisible or control character (U+{ord(char):04X})"
        marks = marks + 1 if category.startswith("M") else 0
        if marks > _MARKS_IN_A_ROW:
            return "too many combining marks on one character"
    if not any(unicodedata.category(c)[0] in "LN" and c not in _BLANKS for c in name):
        return "needs a letter or a digit"
    return None


class NewSquad(msgspec.Struct, forbid_unknown_fields=True):
    unit: Code
    name: Name
    capacity: Annotated[int, Meta(ge=1, le=20)] | None = None
    skills: list[Code] = []


class SquadsQuery(msgspec.Struct, forbid_unknown_fields=True):
    unit: Code | None = None


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
    redis_ok = await redis_answers(request)
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
    errors=(409, 422),
)
async def create_unit(request: Request) -> Response:
    authorize(request, "admin")
    new = await read_body(request, NewUnit)
    services = components(request)
    city = services.city
    if city.unit(new.code) is not None:
        raise ApiError(409, "exists", f"unit {new.code} exists", {"code": "already taken"})
    if new.code in {c.route for c in city.categories} | {keys.NO_UNIT}:
        raise ApiError(422, "invalid", f"{new.code} names a route", {"code": "reserved"})
    _no_repeats("categories", new.categories)
    _no_repeats("districts", new.districts)
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
    # One unit a category in a district: a second would take the calls of the first, which
    # of the two depending on the order the directory happens to list them in.
    for taken in new.categories:
        for district in new.districts:
            holder = city.unit_for(taken, district)
            if holder is not None:
                raise ApiError(
                    409,
                    "conflict",
                    f"{taken} in {district} is handled by {holder.code}",
                    {"categories": f"{taken} in {district} is {holder.code}'s"},
                )
    unit = msgspec.convert(msgspec.structs.asdict(new), Unit)
    await services.directory.add(unit)
    return json_response(msgspec.structs.asdict(unit), 201)


def _no_repeats(field: str, codes: list[str]) -> None:
    repeated = sorted({code for code in codes if codes.count(code) > 1})
    if repeated:
        raise ApiError(
            422, "invalid", f"{field} lists {', '.join(repeated)} twice", {field: "listed twice"}
        )


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
    name = unicodedata.normalize("NFC", new.name).strip()
    wrong = unreadable(name)
    if wrong is not None:
        raise ApiError(422, "invalid", f"name: {wrong}", {"name": wrong})
    _no_repeats("skills", new.skills)
    for skill in new.skills:
        if skill not in unit.categories:
            raise ApiError(
                422,
                "invalid",
                f"{unit.code} does not handle {skill}",
                {"skills": f"not a category of unit {unit.code}: {skill}"},
            )
    capacity = new.capacity or unit.squad_capacity or services.settings.squad_capacity
    squad_id, token = await services.squads.create(unit.code, name, capacity, new.skills)
    return json_response(
        {
            "id": squad_id,
            "unit": unit.code,
            "name": name,
            "capacity": capacity,
            "skills": new.skills or ["*"],
            "token": token,
        },
        201,
        secret=True,
    )


@described(
    summary="A unit's squads by name (every unit's without ``unit``): online, on duty, "
    "capacity, active assignments, last seen, the last token replacement",
    roles=("admin", "center", "unit"),
    query=SquadsQuery,
    answer=list[SquadRow],
    errors=(422,),
)
async def squads_roster(request: Request) -> Response:
    """What a unit desk needs to look after its squads (and the admin to register them): a
    desk sees its own unit only."""
    actor = authorize(request, "admin", "center", "unit")
    query = read_query(request, SquadsQuery)
    services = components(request)
    rows: list[dict[str, Any]] = []
    for unit in units_in_view(services, actor, query.unit):
        rows += await services.squads.roster(unit)
    return json_response(rows)


@described(
    summary="Replace a squad's token (a lost or stolen phone): the old one stops working, "
    "its connection is closed; the answer carries the new token, once",
    roles=("admin", "unit"),
    answer=SquadToken,
    status=201,
    errors=(404,),
)
async def replace_squad_token(request: Request) -> Response:
    """A unit desk replaces the tokens of its own unit's squads; the admin any squad's. The
    squad's live connection, on whichever process, is closed with 4100 (terminal: the phone
    signs in again with the new token)."""
    actor = authorize(request, "admin", "unit")
    services = components(request)
    squad_id = request.path_params["squad_id"]
    unit = await services.squads.unit_of(squad_id)
    if unit is None:
        raise ApiError(404, "not_found", f"no squad {squad_id}")
    require_unit(actor, unit)
    replaced = await services.squads.replace_token(unit, squad_id, actor.label())
    await services.broker.close_squad(
        squad_id, replaced.hub, CloseCode.AUTH_FAILED, "the squad's token was replaced"
    )
    log.info("squad %s: token replaced by %s", squad_id, actor.label())
    return json_response(
        {"id": squad_id, "unit": unit, "token": replaced.token, "closed": replaced.online},
        201,
        secret=True,
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
    record = await services.requests.read(unit, request_id) if unit else None
    if unit is None or record is None:  # closed long ago, its live state gone: the ledger's
        return await archived_detail(request, actor, request_id, unit)
    require_unit(actor, unit)
    body: dict[str, Any] = {
        k: v for k, v in msgspec.structs.asdict(record).items() if k != "v" and v is not None
    }
    body["unit"] = None if unit == keys.NO_UNIT else unit
    if record.offered_at is not None:  # every time here is in seconds
        body["offered_at"] = record.offered_s
    body["deadlines"] = {k: body.pop(k, None) for k in ("accept_by", "arrive_by", "resolve_by")}
    body["timeline"] = await services.requests.timeline(unit, request_id)
    if record.squad and unit != keys.NO_UNIT:  # as people call it, beside its id
        (name,) = await services.squads.names([(unit, record.squad)])
        body["squad_name"] = name or None
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
        Route(f"{prefix}/openapi.json", openapi_json),
        Route(f"{prefix}/categories", categories),
        Route(f"{prefix}/units", units, methods=["GET"]),
        Route(f"{prefix}/units", create_unit, methods=["POST"]),
        Route(f"{prefix}/districts", districts),
        Route(f"{prefix}/squads", squads_roster, methods=["GET"]),
        Route(f"{prefix}/squads", create_squad, methods=["POST"]),
        Route(f"{prefix}/squads/{{squad_id}}", squad_detail),
        Route(f"{prefix}/squads/{{squad_id}}/token", replace_squad_token, methods=["POST"]),
        Route(f"{prefix}/requests", create_request, methods=["POST"]),
        Route(f"{prefix}/requests/{{request_id}}", request_detail),
        Route(f"{prefix}/map", live_map),
        *ledger_routes(prefix),
    ]


__all__ = ["api_routes"]
