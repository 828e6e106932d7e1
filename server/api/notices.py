"""The supervision queue and the notices, for the center and the unit desks.

- ``GET /api/v1/center/queue?unit=&limit=``: open items ordered by their next unmet deadline,
  overdue ones first, each with ``overdue``, ``next_deadline`` ``{kind, at}``, its holding
  squad's id and name, and its open notices;
- ``GET /api/v1/notices?request=&unit=&state=open|closed&limit=``.

A unit desk sees its own unit only (another unit is a 403; no ``unit`` means its own).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server import deadlines
from server.api.answers import Rows
from server.api.common import (
    ApiError,
    Code,
    authorize,
    components,
    json_response,
    read_query,
    require_unit,
    units_in_view,
)
from server.api.openapi import described
from server.store import keys

RequestId = Annotated[str, Meta(pattern=r"^[0-9]{8}-[0-9]{6}$")]
# Items read per unit for the queue: the open set of one unit beyond this is a backlog that a
# desk would page through the ledger, not a queue.
QUEUE_SCAN = 5000


class QueueQuery(msgspec.Struct, forbid_unknown_fields=True):
    unit: Code | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 200


class NoticeQuery(msgspec.Struct, forbid_unknown_fields=True):
    request: RequestId | None = None
    unit: Code | None = None
    state: Literal["open", "closed"] | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100


@described(
    summary="Open items by nearest deadline, overdue first, each with its open notices",
    roles=("center", "unit"),
    query=QueueQuery,
    answer=Rows,
    errors=(422,),
)
async def center_queue(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    query: QueueQuery = read_query(request, QueueQuery)
    services = components(request)
    now = time.time()
    items: list[tuple[tuple[int, float], dict[str, Any]]] = []
    for unit in units_in_view(services, actor, query.unit):
        records = await services.requests.open_records(unit, QUEUE_SCAN)
        notices = await services.notices.open_by_request(unit, (r.id for r in records))
        for record in records:
            upcoming = deadlines.next_deadline(record.progress())
            item = {
                "id": record.id,
                "unit": unit,
                "category": record.category,
                "district": record.district,
                "state": record.state.value,
                "squad": record.squad or None,
                "received_at": record.received_at,
                "overdue": upcoming is not None and upcoming.at <= now,
                "next_deadline": (
                    {"kind": upcoming.kind.value, "at": upcoming.at} if upcoming else None
                ),
                "notices": [msgspec.structs.asdict(n) for n in notices.get(record.id, [])],
            }
            items.append((deadlines.queue_order(upcoming, now), item))
    items.sort(key=lambda pair: pair[0])
    shown = [item for _, item in items[: query.limit]]
    # The squads by name, as their members and the desks call them (the id stays beside it).
    holders = sorted({(item["unit"], item["squad"]) for item in shown if item["squad"]})
    names = dict(zip(holders, await services.squads.names(holders), strict=True))
    for item in shown:
        item["squad_name"] = names.get((item["unit"], item["squad"])) or None
    return json_response({"at": now, "items": shown})


@described(
    summary="Supervision notices by request, unit and state (open or closed)",
    roles=("center", "unit"),
    query=NoticeQuery,
    answer=Rows,
    errors=(422,),
)
async def notices(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    query: NoticeQuery = read_query(request, NoticeQuery)
    services = components(request)
    found: list[Any] = []
    if query.request is not None:
        unit = await services.requests.unit_of(query.request)
        if unit is None or unit == keys.NO_UNIT:
            raise ApiError(404, "not_found", f"no request {query.request} in a unit")
        require_unit(actor, unit)
        if query.unit is not None and query.unit != unit:
            return json_response([])
        listed = await services.notices.of_request(unit, query.request)
        found = [n for n in listed if query.state is None or n.state == query.state]
        found = found[-query.limit :]
    else:
        for unit in units_in_view(services, actor, query.unit):
            found += await services.notices.of_unit(unit, query.state, query.limit)
        found.sort(key=lambda n: (n.closed_at or n.issued_at, n.id), reverse=True)
        found = found[: query.limit]
    return json_response([msgspec.structs.asdict(n) for n in found])


def notice_routes() -> list[Route]:
    prefix = "/api/v1"
    return [
        Route(f"{prefix}/center/queue", center_queue),
        Route(f"{prefix}/notices", notices),
    ]
