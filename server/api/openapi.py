"""The HTTP API described as OpenAPI 3.1, generated from the routes and the msgspec Structs
that validate their bodies and queries: one source, as the field protocol has.

Each handler carries its :class:`Operation` (``@described(...)``: summary, roles, body,
query, answer, status, errors); :func:`document` walks the app's routes and fails on a
``/api/v1`` route that is not described, so the document cannot silently fall behind.

    python -m server.api                   write docs/openapi.json
    python -m server.api --check           exit 1 if the committed file is stale
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from starlette.routing import BaseRoute, Route

PREFIX = "/api/v1"
DOCUMENT_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
F = TypeVar("F", bound=Callable[..., Any])
SQUAD = ("squad",)  # the roles of a route for squads' phones: Basic <squad>:<token>

_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No content",
    400: "The body is not JSON (`malformed_json`)",
    401: "No valid credentials (`unauthenticated`)",
    403: (
        "The caller's role may not do this, or the item is another unit's (`forbidden`); "
        "a sign-in from another site's page (`cross_site`)"
    ),
    404: "No such item (`not_found`)",
    409: "The item is not in a state that allows this, or the name is taken",
    413: "The body is larger than DISPATCH_MAX_BODY_BYTES (`too_large`)",
    415: "The body is not labelled application/json (`unsupported_media_type`)",
    422: "A field is missing, of the wrong type or out of range (`fields` names it)",
    429: "Too many wrong credentials from this address (`Retry-After`)",
    503: "The live state or the ledger is unreachable: retry (`Retry-After`)",
}


class ErrorDetail(msgspec.Struct):
    code: str
    message: str
    fields: dict[str, str]  # offending field -> reason
    state: str | None = None  # a 409's current state of the item
    # a ruling the city refused: the codes it is about (unit, category, district, holder)
    refused: dict[str, str] | None = None


class ErrorBody(msgspec.Struct):
    """Every error answer."""

    error: ErrorDetail


@dataclass(frozen=True, slots=True)
class Operation:
    summary: str
    roles: tuple[str, ...]  # () : no sign-in needed; admin may do anything a role may;
    # SQUAD: a squad's id and token (no person)
    body: Any = None  # the msgspec type of the JSON body
    query: Any = None  # a Struct whose fields are the query parameters
    answer: Any = None  # the type of the JSON answer (None: no body)
    status: int = 200
    errors: tuple[int, ...] = ()
    media_type: str = "application/json"
    alternatives: tuple[str, ...] = ()  # other media types of the answer (``Accept``), as text


def described(**fields: Any) -> Callable[[F], F]:
    """Attach the :class:`Operation` of a handler."""
    operation = Operation(**fields)

    def attach(handler: F) -> F:
        handler.__operation__ = operation  # type: ignore[attr-defined]
        return handler

    return attach


def operation_of(handler: Any) -> Operation | None:
    return getattr(handler, "__operation__", None)


def undescribed(routes: Iterable[BaseRoute]) -> list[str]:
    """The API routes that carry no Operation."""
    return [
        route.path
        for route in routes
        if isinstance(route, Route)
        and route.path.startswith(PREFIX)
        and operation_of(route.endpoint) is None
    ]


def document(routes: Iterable[BaseRoute], version: str = "1") -> dict[str, Any]:
    """The OpenAPI 3.1 document of every ``/api/v1`` route."""
    routes = list(routes)
    missing = undescribed(routes)
    if missing:
        raise ValueError(f"routes without a description: {', '.join(missing)}")
    types: set[Any] = {ErrorBody}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route) or not route.path.startswith(PREFIX):
            continue
        operation = operation_of(route.endpoint)
        assert operation is not None
        for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
            paths.setdefault(route.path, {})[method.lower()] = _operation(route, operation, types)
    (_, components) = msgspec.json.schema_components(
        sorted(types, key=repr), ref_template="#/components/schemas/{name}"
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "City linkage dispatch: HTTP API",
            "version": version,
            "description": (
                "JSON over HTTP. Authenticate with `Authorization: Bearer <token>` (a person's "
                "API token) or the `ld_session` cookie set by `POST /api/v1/session`. Roles: "
                "admin, calltaker, center, unit (one unit's desk: its own unit only), wall. "
                'Every error is `{"error": {"code", "message", "fields"}}`.'
            ),
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "ld_session"},
                "squad": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "A squad's id and token (as in the field socket's hello).",
                },
            },
        },
    }


def _operation(route: Route, operation: Operation, types: set[Any]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "summary": operation.summary,
        "operationId": route.name,
        "x-roles": list(operation.roles),
    }
    if operation.roles == SQUAD:
        result["security"] = [{"squad": []}]
        result["description"] = "A squad's phone: Basic credentials <squad id>:<token>."
    elif operation.roles:
        result["security"] = [{"bearer": []}, {"session": []}]
        result["description"] = "Roles: " + ", ".join(operation.roles) + " (and admin)."
    else:
        result["security"] = []
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.param_convertors
    ]
    if operation.query is not None:
        _, components = msgspec.json.schema_components(
            [operation.query], ref_template="#/components/schemas/{name}"
        )
        fields = components[operation.query.__name__]
        required = set(fields.get("required", ()))
        for name, schema in fields["properties"].items():
            parameters.append(
                {"name": name, "in": "query", "required": name in required, "schema": schema}
            )
    if parameters:
        result["parameters"] = parameters
    if operation.body is not None:
        result["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _schema(operation.body, types)}},
        }
    answer: dict[str, Any] = {"description": _STATUS_TEXT.get(operation.status, "OK")}
    if operation.answer is not None:
        schema = (
            _schema(operation.answer, types)
            if operation.media_type == "application/json"
            else {"type": "string"}
        )
        answer["content"] = {operation.media_type: {"schema": schema}}
        for media_type in operation.alternatives:
            answer["content"][media_type] = {"schema": {"type": "string"}}
    responses: dict[str, Any] = {str(operation.status): answer}
    signed_in = {401} if operation.roles == SQUAD else {401, 403} if operation.roles else set()
    errors = set(operation.errors) | signed_in
    if operation.body is not None:
        errors |= {400, 413, 422}
    for status in sorted(errors):
        responses[str(status)] = {
            "description": _STATUS_TEXT[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        }
    result["responses"] = responses
    return result


def _schema(kind: Any, types: set[Any]) -> dict[str, Any]:
    """The schema of ``kind``, its Structs collected into ``types`` (components)."""
    (schema,), _ = msgspec.json.schema_components(
        [kind], ref_template="#/components/schemas/{name}"
    )
    for found in _structs(kind):
        types.add(found)
    return schema


def _structs(kind: Any) -> set[Any]:
    """The Struct types ``kind`` refers to (directly or in containers)."""
    found: set[Any] = set()
    info = msgspec.inspect.type_info(kind)
    stack = [info]
    while stack:
        item = stack.pop()
        if isinstance(item, msgspec.inspect.StructType):
            if item.cls not in found:
                found.add(item.cls)
                stack.extend(f.type for f in item.fields)
        elif isinstance(item, msgspec.inspect.UnionType):
            stack.extend(item.types)
        elif isinstance(item, msgspec.inspect.ListType | msgspec.inspect.SetType):
            stack.append(item.item_type)
        elif isinstance(item, msgspec.inspect.DictType):
            stack.extend((item.key_type, item.value_type))
        elif isinstance(item, msgspec.inspect.Metadata):
            stack.append(item.type)
    return found


def text(routes: Iterable[BaseRoute]) -> str:
    return json.dumps(document(routes), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


if __name__ == "__main__":  # the older spelling of ``python -m server.api``
    import runpy

    runpy.run_module("server.api", run_name="__main__")
