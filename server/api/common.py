"""What every ``/api/v1`` handler shares: the error and its JSON shape, the caller's actor
and role check, body and query decoding with the field at fault, and the app's components.

Every error is ``{"error": {"code", "message", "fields"}}`` with a precise 4xx status;
``fields`` maps each offending field to the reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, overload

import msgspec
from msgspec import Meta
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from server.accounts.asgi import auth_result
from server.settings import Role
from server.store.requests import Actor

if TYPE_CHECKING:
    from server.components import Components
    from server.ledger import Ledger

Code = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)]
T = TypeVar("T")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """``extra``: more members of the error object (e.g. the current ``state``)."""
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields or {}
        self.headers = headers or {}
        self.extra = extra or {}


def json_response(data: Any, status: int = 200, *, secret: bool = False) -> Response:
    """``data`` as JSON; ``secret``: it carries a credential shown once (a token): no cache
    or proxy keeps a copy (``Cache-Control: no-store``)."""
    headers = {"cache-control": "no-store"} if secret else None
    return Response(
        msgspec.json.encode(data),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def components(request: Request) -> Components:
    """The app's components, created by its lifespan."""
    return request.app.state.components  # type: ignore[no-any-return]


def ledger_of(request: Request) -> Ledger:
    ledger = components(request).ledger
    if ledger is None:
        raise ApiError(503, "unavailable", "the ledger is not open")
    return ledger


def authorize(request: Request, *roles: Role) -> Actor:
    """The caller's actor (``calltaker:alice``), if the person its bearer token or session
    cookie names has one of ``roles`` (admin may do anything). A ``unit`` desk passes only
    where ``roles`` names ``unit``; the route then checks the unit with
    :func:`require_unit`."""
    result = auth_result(request)
    principal = result.principal
    if principal is None:
        if result.failure == "throttled":
            raise ApiError(
                429,
                "too_many_failures",
                "too many wrong credentials from this address: wait",
                headers={"Retry-After": str(math.ceil(result.retry_after_s))},
            )
        reason = "unknown or expired credentials" if result.failure else "not signed in"
        raise ApiError(401, "unauthenticated", f"a bearer token or a session is required: {reason}")
    role = principal.role
    if role != "admin" and role not in roles:
        raise ApiError(403, "forbidden", f"role {role} may not do this; needs {' or '.join(roles)}")
    return principal.actor()


def require_unit(actor: Actor, unit: str | None) -> None:
    """A unit desk sees only its own unit's data (every other role passes)."""
    if actor.kind == "unit" and actor.unit != unit:
        raise ApiError(403, "forbidden", f"the desk of unit {actor.unit} sees only that unit")


def units_in_view(services: Components, actor: Actor, unit: str | None) -> list[str]:
    """The units the caller asked for (``unit``, or all) and may see: a unit desk asking for
    another unit is refused (403), as everywhere; an unknown unit is a 422."""
    if actor.kind == "unit":
        require_unit(actor, unit or actor.unit)
        return [actor.unit]
    if unit is not None:
        if services.city.unit(unit) is None:
            raise ApiError(422, "unknown_unit", f"no unit {unit}", {"unit": "unknown unit"})
        return [unit]
    return services.directory.unit_codes()


_FIELD_PATH = re.compile(r"at `\$\.([A-Za-z_][\w]*)")
_MISSING = re.compile(r"(?:missing required field|unknown field) `([^`]+)`")


def invalid(exc: msgspec.ValidationError) -> ApiError:
    """A 422 naming the field msgspec found at fault."""
    message = str(exc)
    match = _FIELD_PATH.search(message) or _MISSING.search(message)
    return ApiError(422, "invalid", message, {match.group(1): message} if match else {})


@overload
async def read_body(request: Request, kind: type[T]) -> T: ...
@overload
async def read_body(request: Request, kind: Any) -> Any: ...
async def read_body(request: Request, kind: Any) -> Any:
    """The JSON body as ``kind`` (a Struct, or a union of tagged Structs): 400
    ``malformed_json`` if it is not JSON, 422 ``invalid`` naming the field if it breaks the
    schema."""
    raw = await request.body()
    try:
        value = msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise invalid(exc) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", f"the body is not JSON: {exc}") from None
    if b"\\u0000" in raw:  # JSON's only way of writing a NUL: rare, so looked into then
        field = _nul_field(msgspec.to_builtins(value))
        if field is not None:
            reason = "may not contain a NUL character (\\u0000)"
            raise ApiError(422, "invalid", f"{field} {reason}", fields={field: reason})
    return value


def _nul_field(value: Any, path: str = "") -> str | None:
    """The first field (``note``, ``items.2.text``) whose text holds a NUL: PostgreSQL's
    text takes none, and no person writes one."""
    if isinstance(value, str):
        return (path or "body") if "\x00" in value else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        where = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and "\x00" in key:
            return where
        found = _nul_field(item, where)
        if found is not None:
            return found
    return None


def read_query(request: Request, kind: type[T]) -> T:
    """The query string as ``kind`` (numbers from text); 422 naming the field."""
    try:
        return msgspec.convert(dict(request.query_params), kind, strict=False)
    except msgspec.ValidationError as exc:
        raise invalid(exc) from None


# An error's message is for a person: one that quotes a caller's huge input (a 5,000-digit
# request number) is cut, not echoed whole.
MESSAGE_MAX = 300


def _said(text: str) -> str:
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 1] + "…"


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    fields = {name: _said(reason) for name, reason in exc.fields.items()}
    response = json_response(
        {"error": {"code": exc.code, "message": _said(exc.message), "fields": fields, **exc.extra}},
        exc.status,
    )
    response.headers.update(exc.headers)
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return json_response(
        {"error": {"code": code, "message": str(exc.detail), "fields": {}}}, exc.status_code
    )


async def _redis_error(request: Request, exc: Exception) -> Response:
    # Nothing was acknowledged: the caller may retry the same request.
    body = {
        "error": {"code": "unavailable", "message": "live state unreachable: retry", "fields": {}}
    }
    response = json_response(body, 503)
    response.headers["Retry-After"] = "1"
    return response


async def _internal_error(request: Request, exc: Exception) -> Response:
    # The error JSON every answer has; the traceback goes to the log (Starlette raises the
    # exception again once this is sent), never to the caller.
    message = "internal error: see the hub's log"
    return json_response({"error": {"code": "internal", "message": message, "fields": {}}}, 500)


def error_handlers() -> dict[Any, Callable[[Request, Exception], Any]]:
    return {
        ApiError: _api_error,
        HTTPException: _http_error,
        RedisError: _redis_error,
        Exception: _internal_error,  # an unforeseen fault: a 500, still in the error's shape
    }
