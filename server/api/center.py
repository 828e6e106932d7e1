"""The supervision center's HTTP API: rulings on disputes, cancel, notes, reopen, and the
disputes waiting for a ruling (see :mod:`server.center.actions`).

Bodies are msgspec Structs that refuse unknown fields; a request in the wrong state is a
409 ``invalid_state`` whose error names the current ``state``; nothing changes on an error.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api.answers import Anything, Rows
from server.api.common import (
    ApiError,
    Code,
    authorize,
    components,
    json_response,
    read_body,
    read_query,
    units_in_view,
)
from server.api.ledger import require_owner
from server.api.openapi import described
from server.center.actions import CenterActions, CenterError
from server.store.requests import Actor

# Words: not blank (a NUL is refused for every body by read_body).
Note = Annotated[str, Meta(min_length=1, max_length=2000, pattern=r"\S")]
RequestId = Annotated[str, Meta(min_length=1, max_length=64)]


class Uphold(msgspec.Struct, forbid_unknown_fields=True, tag_field="decision", tag="uphold"):
    """The unit keeps the request; its disputing squad gets the offer again first."""

    note: Note


class Reassign(msgspec.Struct, forbid_unknown_fields=True, tag_field="decision", tag="reassign"):
    """The request moves to ``unit``, the unit with jurisdiction (for ``category`` if
    given) in its district; ``assist`` units' squads help."""

    unit: Code
    note: Note
    category: Code | None = None
    assist: Annotated[list[Code], Meta(max_length=10)] = []


Ruling = Uphold | Reassign


class Cancel(msgspec.Struct, forbid_unknown_fields=True):
    reason: Literal["duplicate", "withdrawn", "unfounded"]
    note: Note
    duplicate_of: RequestId | None = None


class NoteBody(msgspec.Struct, forbid_unknown_fields=True):
    note: Note


class Reopen(msgspec.Struct, forbid_unknown_fields=True):
    note: Note


def _center(request: Request) -> CenterActions:
    return components(request).center


async def _carried_out(step: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """The center's step, its refusal as the API's error (a wrong state names the current
    one; a ruling the city refused names the codes it is about, under ``refused``)."""
    try:
        return await step
    except CenterError as exc:
        extra: dict[str, Any] = {"state": exc.state.value} if exc.state is not None else {}
        if exc.refused:
            extra["refused"] = exc.refused
        raise ApiError(exc.status, exc.code, exc.message, exc.fields, extra=extra) from None


@described(
    summary="Rule on a disputed request: uphold, or reassign to the unit with jurisdiction",
    roles=("center",),
    body=Ruling,
    answer=Anything,
    errors=(404, 409),
)
async def ruling(request: Request) -> Response:
    actor = authorize(request, "center")
    body = await read_body(request, Ruling)
    request_id = request.path_params["request_id"]
    center = _center(request)
    if isinstance(body, Reassign):
        step = center.reassign(request_id, body.unit, body.category, body.assist, body.note, actor)
    else:
        step = center.uphold(request_id, body.note, actor)
    done = await _carried_out(step)
    return json_response(done)


@described(
    summary="Cancel an open request (duplicate, withdrawn, unfounded); revokes its squad's work",
    roles=("center",),
    body=Cancel,
    answer=Anything,
    errors=(404, 409),
)
async def cancel(request: Request) -> Response:
    actor = authorize(request, "center")
    body = await read_body(request, Cancel)
    if (body.reason == "duplicate") != bool(body.duplicate_of):
        reason = "names the original exactly when reason is duplicate"
        raise ApiError(422, "invalid", f"duplicate_of {reason}", {"duplicate_of": reason})
    done = await _carried_out(
        _center(request).cancel(
            request.path_params["request_id"],
            body.reason,
            body.note,
            body.duplicate_of or "",
            actor,
        )
    )
    return json_response(done)


@described(
    summary="A note on a request (a unit desk: on its own unit's)",
    roles=("center", "unit"),
    body=NoteBody,
    answer=Anything,
    status=201,
    errors=(404,),
)
async def note(request: Request) -> Response:
    """A note by the center, or by a unit desk on its own unit's request."""
    actor = authorize(request, "center", "unit")
    body = await read_body(request, NoteBody)
    request_id = request.path_params["request_id"]
    await _require_own(request, actor, request_id)
    done = await _carried_out(_center(request).note(request_id, body.note, actor))
    return json_response(done, 201)


@described(
    summary="Reopen a resolved request: back to its unit with a new resolve deadline",
    roles=("center",),
    body=Reopen,
    answer=Anything,
    errors=(404, 409),
)
async def reopen(request: Request) -> Response:
    actor = authorize(request, "center")
    body = await read_body(request, Reopen)
    done = await _carried_out(
        _center(request).reopen(request.path_params["request_id"], body.note, actor)
    )
    return json_response(done)


class DisputesQuery(msgspec.Struct, forbid_unknown_fields=True):
    unit: Code | None = None


@described(
    summary="Disputed requests waiting for a ruling, with the units that could take them",
    roles=("center", "unit"),
    query=DisputesQuery,
    answer=Rows,
    errors=(422,),
)
async def disputes(request: Request) -> Response:
    """Disputed requests waiting for a ruling, oldest first, of one unit or all (a unit
    desk: its own unit's; asking for another unit is refused, as on the queue)."""
    actor = authorize(request, "center", "unit")
    query: DisputesQuery = read_query(request, DisputesQuery)
    services = components(request)
    units = units_in_view(services, actor, query.unit)
    return json_response(await services.center.disputes(units))


async def _require_own(request: Request, actor: Actor, request_id: str) -> None:
    """A unit desk acts on its own unit's requests only; an unknown id is refused like
    another unit's (:func:`server.api.ledger.require_owner`)."""
    await require_owner(request, actor, request_id)


def center_routes() -> list[Route]:
    prefix = "/api/v1"
    return [
        Route(f"{prefix}/requests/{{request_id}}/ruling", ruling, methods=["POST"]),
        Route(f"{prefix}/requests/{{request_id}}/cancel", cancel, methods=["POST"]),
        Route(f"{prefix}/requests/{{request_id}}/notes", note, methods=["POST"]),
        Route(f"{prefix}/requests/{{request_id}}/reopen", reopen, methods=["POST"]),
        Route(f"{prefix}/center/disputes", disputes, methods=["GET"]),
    ]
