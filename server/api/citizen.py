"""``GET /api/v1/requests/{id}/messages``: what the caller was told and how each message's
delivery went, from the ledger (roles center and admin; a unit desk for its own unit)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api.answers import Rows
from server.api.common import (
    ApiError,
    authorize,
    json_response,
    ledger_of,
)
from server.api.ledger import owner_of, require_owner
from server.api.openapi import described
from server.citizen.record import messages_of
from server.ledger import request_events


@described(
    summary="What the caller was told: each message with its delivery attempts",
    roles=("center", "unit"),
    answer=Rows,
    errors=(404, 503),
)
async def request_messages(request: Request) -> Response:
    actor = authorize(request, "center", "unit")
    request_id = request.path_params["request_id"]
    await require_owner(request, actor, request_id)
    events = await request_events(ledger_of(request), request_id)
    if not events and await owner_of(request, request_id) is None:
        raise ApiError(404, "not_found", f"no request {request_id}")
    return json_response({"request": request_id, "messages": messages_of(events)})


def citizen_routes() -> list[Route]:
    return [Route("/api/v1/requests/{request_id}/messages", request_messages)]
