"""HTTP and WebSocket routes of the wall map: ``GET /api/v1/map/figures`` and ``/ws/map``."""

from __future__ import annotations

import time
from typing import Annotated

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from server.api.common import authorize, components, json_response, ledger_of
from server.api.openapi import described
from server.wallmap.figures import FiguresCache
from server.wallmap.socket import map_socket
from server.wallmap.state import MapState, read_requests


class DayFigures(msgspec.Struct):
    open: int  # open requests now
    overdue: int  # of them, past a deadline
    day: str  # the city's local date, YYYY-MM-DD
    dispatched_today: int  # requests accepted by a squad since local midnight
    arrived_today: int  # squads arrived on a scene since local midnight
    median_arrival_s: Annotated[float, Meta(ge=0)] | None  # intake to arrival, over
    # today's arrivals; null before the first


@described(
    summary="The wall map's figures: open and overdue requests, dispatched today, median "
    "time to arrival today",
    roles=("wall", "center", "calltaker"),
    answer=DayFigures,
    errors=(503,),
)
async def map_figures(request: Request) -> Response:
    authorize(request, "wall", "center", "calltaker")
    services = components(request)
    ledger = ledger_of(request)
    now = time.time()
    cache = getattr(request.app.state, "map_figures", None)
    if cache is None:
        cache = request.app.state.map_figures = FiguresCache()
    counts = MapState(now, requests=await read_requests(services, now)).counts()
    day = await cache.get(ledger.engine, services.city.zone, now)
    return json_response(counts | day)


def wallmap_routes() -> list[BaseRoute]:
    return [
        Route("/api/v1/map/figures", map_figures, methods=["GET"]),
        WebSocketRoute("/ws/map", map_socket),
    ]
