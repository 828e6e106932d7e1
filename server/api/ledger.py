"""The ledger over HTTP (roles center and unit; a unit desk reads its own unit only):

- ``GET /api/v1/ledger/requests``: requests by unit, category, district, state, time
  received, missed deadline (``overdue``), supervision notices (``notice``,
  ``notice_level``), caller phone and squad;
- ``GET /api/v1/ledger/requests/{id}/events``: one request's events;
- ``GET /api/v1/ledger/export.csv``: the requests as CSV (the export is recorded);
- ``GET /api/v1/ledger/notices``, ``/ledger/actions``, ``/ledger/messages``: the center's
  record (notices and how they closed, disputes, promises, rulings, cancellations,
  reopenings, notes, messages to callers with their delivery attempts), each row with who
  acted;
- ``GET /api/v1/audit`` (admin): who exported the ledger.

Every list is paged: ``limit`` (bounded) and ``offset``, in a stable order. A bad value is a
422 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api.answers import Rows
from server.api.common import (
    ApiError,
    Code,
    authorize,
    components,
    json_response,
    ledger_of,
    read_query,
    require_unit,
)
from server.api.openapi import described
from server.deadlines import NOTICE_KINDS
from server.ledger import (
    archived_request,
    audit_trail,
    export_csv,
    find_actions,
    find_messages,
    find_notices,
    find_requests,
    record_audit,
    request_events,
    request_unit,
)
from server.ledger.records import ACTION_EVENTS
from server.lifecycle import State
from server.store.keys import NO_UNIT
from server.store.requests import Actor

# Finite and within the database's numbers: "inf", "nan" and 2**63 are a 422, not a 500.
EpochSeconds = Annotated[float, Meta(ge=0, le=1e11)]
Limit = Annotated[int, Meta(ge=1, le=10_000)]
Offset = Annotated[int, Meta(ge=0, le=1_000_000)]  # deeper pages: narrow by time
RequestId = Annotated[str, Meta(pattern=r"^[0-9]{8}-[0-9]{6,}(~[a-z][a-z0-9_]*)?$")]
SquadId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Phone = Annotated[str, Meta(pattern=r"^\+?[0-9]{3,20}$")]
ActorLabel = Annotated[str, Meta(pattern=r"^[a-z]+(:[^\s]{1,100})?$")]
NoticeKind = Literal["accept", "arrive", "resolve", "promise", "waiting", "recheck"]
ActionKind = Literal[
    "disputed", "deferred", "upheld", "reassigned", "cancelled", "reopened", "note"
]
# Spelt out for the type checker and the OpenAPI document; they must be the server's own.
assert set(get_args(NoticeKind)) == set(NOTICE_KINDS), NOTICE_KINDS
assert set(get_args(ActionKind)) == ACTION_EVENTS, ACTION_EVENTS
StateName = Literal[
    "received",
    "transferred",
    "queued",
    "offered",
    "accepted",
    "en_route",
    "on_scene",
    "deferred",
    "disputed",
    "resolved",
    "cancelled",
]
assert set(get_args(StateName)) == {s.value for s in State}, list(State)


class LedgerQuery(msgspec.Struct, forbid_unknown_fields=True):
    """Filters of the ledger's requests (query string); every given one must match."""

    unit: Code | None = None
    category: Code | None = None
    district: Code | None = None
    state: StateName | None = None  # one of the lifecycle's (another would match nothing)
    since: EpochSeconds | None = None  # received at or after
    until: EpochSeconds | None = None  # received before
    # Missed that deadline (reached after it, or not reached while it passed): any of them.
    overdue: Literal["any", "accept", "arrive", "resolve"] | None = None
    notice: Literal["any"] | NoticeKind | None = None
    notice_level: Annotated[int, Meta(ge=1, le=20)] | None = None  # a notice this high or more
    caller_phone: Phone | None = None
    squad: SquadId | None = None  # has it, or had it when it was resolved or cancelled
    limit: Limit = 100
    offset: Offset = 0


class PageQuery(msgspec.Struct, forbid_unknown_fields=True):
    limit: Limit = 1000
    offset: Offset = 0


class NoticesQuery(msgspec.Struct, forbid_unknown_fields=True):
    """Notices, newest issued first."""

    unit: Code | None = None
    request: RequestId | None = None
    kind: NoticeKind | None = None
    level: Annotated[int, Meta(ge=1, le=20)] | None = None  # this level or higher
    state: Literal["open", "closed"] | None = None
    since: EpochSeconds | None = None  # issued at or after
    until: EpochSeconds | None = None
    limit: Limit = 100
    offset: Offset = 0


class ActionsQuery(msgspec.Struct, forbid_unknown_fields=True):
    """Disputes, promises, rulings, cancellations, reopenings, notes; newest first."""

    unit: Code | None = None
    request: RequestId | None = None
    action: ActionKind | None = None
    by: ActorLabel | None = None  # who acted, e.g. center:li
    since: EpochSeconds | None = None
    until: EpochSeconds | None = None
    limit: Limit = 100
    offset: Offset = 0


class MessagesQuery(msgspec.Struct, forbid_unknown_fields=True):
    """Messages to callers with their delivery attempts; newest queued first."""

    unit: Code | None = None
    request: RequestId | None = None
    outcome: Literal["delivered", "failed", "pending"] | None = None
    since: EpochSeconds | None = None  # queued at or after
    until: EpochSeconds | None = None
    limit: Limit = 100
    offset: Offset = 0


class AuditQuery(msgspec.Struct, forbid_unknown_fields=True):
    action: Code | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100
    offset: Offset = 0


def _own_unit(request: Request, actor: Actor, unit: str | None) -> str | None:
    """The unit to read: a unit desk's own (naming another is a 403); anyone else's choice
    (an unknown one is a 422, as everywhere)."""
    if actor.kind != "unit":
        if unit is not None and unit != NO_UNIT and components(request).city.unit(unit) is None:
            raise ApiError(422, "unknown_unit", f"no unit {unit}", {"unit": "unknown unit"})
        return unit
    require_unit(actor, unit or actor.unit)
    return actor.unit


def _ledger_query(request: Request, actor: Actor) -> dict[str, Any]:
    query = read_query(request, LedgerQuery)
    query.unit = _own_unit(request, actor, query.unit)
    return msgspec.structs.asdict(query)


@described(
    summary="The ledger: requests by unit, category, district, state, time, missed deadline, "
    "notice, caller phone, squad (paged)",
    roles=("center", "unit"),
    query=LedgerQuery,
    answer=Rows,
    errors=(403, 422, 503),
)
async def ledger_requests(request: Request) -> Response:
    """Requests from the ledger, oldest received first, ``limit`` from ``offset``."""
    actor = authorize(request, "center", "unit")
    return json_response(await find_requests(ledger_of(request), **_ledger_query(request, actor)))


@described(
    summary="Every recorded event of a request (paged)",
    roles=("center", "unit"),
    query=PageQuery,
    answer=Rows,
    errors=(403, 404, 422, 503),
)
async def ledger_events(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    page = read_query(request, PageQuery)
    request_id = request.path_params["request_id"]
    await require_owner(request, actor, request_id)
    ledger = ledger_of(request)
    events = await request_events(ledger, request_id, limit=page.limit, offset=page.offset)
    if not events and page.offset == 0 and await owner_of(request, request_id) is None:
        raise ApiError(404, "not_found", f"no request {request_id[:64]}")
    return json_response(events)


async def require_owner(request: Request, actor: Actor, request_id: str) -> None:
    """A unit desk reads and acts on the requests its unit holds now: its live state's unit,
    else the ledger's. A request moved to the unit comes with its whole history (the other
    unit's steps and notes included: the desk takes the case over); one moved away goes
    with it. An unknown id is refused like another unit's (403), so that a desk cannot
    count the other units' requests by trying ids. Other roles pass."""
    if actor.kind == "unit":
        require_unit(actor, await owner_of(request, request_id))


async def owner_of(request: Request, request_id: str) -> str | None:
    """The unit that holds a request now: its live state's, else the ledger's record's
    (one whose live state left after the retention window). None: no such request."""
    services = components(request)
    unit = await services.requests.unit_of(request_id)
    if unit is None and services.ledger is not None:
        unit = await request_unit(services.ledger, request_id)
    return unit


@described(
    summary="The ledger as CSV (UTF-8 with BOM); the export is recorded",
    roles=("center", "unit"),
    query=LedgerQuery,
    answer=str,
    media_type="text/csv",
    errors=(403, 422, 503),
)
async def ledger_export(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    query = _ledger_query(request, actor)
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


@described(
    summary="Supervision notices as recorded: issued, escalated, closed by which step and "
    "whom (paged)",
    roles=("center", "unit"),
    query=NoticesQuery,
    answer=Rows,
    errors=(403, 422, 503),
)
async def ledger_notices(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    query = read_query(request, NoticesQuery)
    rows = await find_notices(
        ledger_of(request),
        unit=_own_unit(request, actor, query.unit),
        request_id=query.request,
        kind=query.kind,
        level=query.level,
        state=query.state,
        since=query.since,
        until=query.until,
        limit=query.limit,
        offset=query.offset,
    )
    return json_response(rows)


@described(
    summary="Disputes, promises, rulings, cancellations, reopenings and notes, each with "
    "who acted (paged)",
    roles=("center", "unit"),
    query=ActionsQuery,
    answer=Rows,
    errors=(403, 422, 503),
)
async def ledger_actions(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    query = read_query(request, ActionsQuery)
    rows = await find_actions(
        ledger_of(request),
        unit=_own_unit(request, actor, query.unit),
        request_id=query.request,
        action=query.action,
        by=query.by,
        since=query.since,
        until=query.until,
        limit=query.limit,
        offset=query.offset,
    )
    return json_response(rows)


@described(
    summary="Messages to callers with every delivery attempt (phones masked; paged)",
    roles=("center", "unit"),
    query=MessagesQuery,
    answer=Rows,
    errors=(403, 422, 503),
)
async def ledger_messages(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    query = read_query(request, MessagesQuery)
    rows = await find_messages(
        ledger_of(request),
        unit=_own_unit(request, actor, query.unit),
        request_id=query.request,
        outcome=query.outcome,
        since=query.since,
        until=query.until,
        limit=query.limit,
        offset=query.offset,
    )
    return json_response(rows)


@described(
    summary="Who exported the ledger, when, with which filters (paged)",
    roles=("admin",),
    query=AuditQuery,
    answer=Rows,
    errors=(422,),
)
async def audit(request: Request) -> Response:
    """Who exported the record (and, as the product grows, other actions on the record)."""
    authorize(request, "admin")
    query = read_query(request, AuditQuery)
    return json_response(
        await audit_trail(ledger_of(request), query.action, query.limit, query.offset)
    )


async def archived_detail(
    request: Request, actor: Actor, request_id: str, live_unit: str | None
) -> Response:
    """``GET /api/v1/requests/{id}`` for a request not in Redis: the ledger's record of it
    (``archived``: its live state was dropped after the retention window), else a 404."""
    ledger = components(request).ledger
    found = await archived_request(ledger, request_id) if ledger is not None else None
    if found is None:
        require_unit(actor, live_unit)
        raise ApiError(404, "not_found", f"no request {request_id}")
    require_unit(actor, found["unit"] or NO_UNIT)
    return json_response(found)


def ledger_routes(prefix: str = "/api/v1") -> list[Route]:
    return [
        Route(f"{prefix}/audit", audit),
        Route(f"{prefix}/ledger/requests", ledger_requests),
        Route(f"{prefix}/ledger/requests/{{request_id}}/events", ledger_events),
        Route(f"{prefix}/ledger/export.csv", ledger_export),
        Route(f"{prefix}/ledger/notices", ledger_notices),
        Route(f"{prefix}/ledger/actions", ledger_actions),
        Route(f"{prefix}/ledger/messages", ledger_messages),
    ]
