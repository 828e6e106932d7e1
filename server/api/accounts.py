"""HTTP API of accounts and sign-in, under ``/api/v1``.

Accounts (admin only): ``POST /accounts``, ``GET /accounts``, ``POST /accounts/{username}/
tokens``, ``DELETE /accounts/{username}/tokens/{token_id}``, ``POST /accounts/{username}/
disable``. Browser sign-in (no token needed): ``POST /session`` sets the ``ld_session``
cookie, ``GET /session`` says who you are, ``DELETE /session`` signs out.
"""

from __future__ import annotations

import asyncio
import math

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.accounts.asgi import auth_result, client_address, same_origin
from server.accounts.auth import Authenticator, AuthResult
from server.accounts.model import (
    SESSION_COOKIE,
    NewAccount,
    NewToken,
    SignIn,
    secret_hash,
    unit_problems,
)
from server.accounts.passwords import hash_password
from server.accounts.store import UsernameTaken
from server.api.answers import Anything, Rows
from server.api.common import ApiError, authorize, components, json_response, read_body
from server.api.openapi import described
from server.settings import Settings


def _auth(request: Request) -> Authenticator:
    auth = components(request).auth
    if auth is None:
        raise ApiError(503, "unavailable", "accounts are not open")
    return auth


@described(
    summary="Create a person's account",
    roles=("admin",),
    body=NewAccount,
    answer=Anything,
    status=201,
    errors=(409,),
)
async def create_account(request: Request) -> Response:
    actor = authorize(request, "admin")
    new = await read_body(request, NewAccount)
    problems = unit_problems(
        new.role, new.unit, bool(new.unit and components(request).city.unit(new.unit))
    )
    if problems:
        raise ApiError(422, "invalid", problems["unit"], problems)
    password_hash = await asyncio.to_thread(hash_password, new.password)
    try:
        created = await _auth(request).store.create(
            new.username, new.name, new.role, new.unit, password_hash, actor.label()
        )
    except UsernameTaken:
        raise ApiError(
            409, "exists", f"username {new.username} is taken", {"username": "already taken"}
        ) from None
    return json_response(created, 201)


@described(
    summary="Every account with its tokens (ids and labels, never secrets)",
    roles=("admin",),
    answer=Rows,
)
async def list_accounts(request: Request) -> Response:
    authorize(request, "admin")
    return json_response(await _auth(request).store.everyone())


async def _existing(request: Request) -> str:
    username = request.path_params["username"]
    if await _auth(request).store.get(username) is None:
        raise ApiError(404, "not_found", f"no account {username}")
    return str(username)


@described(
    summary="Issue an API token for a person; shown this once",
    roles=("admin",),
    body=NewToken,
    answer=Anything,
    status=201,
    errors=(404,),
)
async def add_token(request: Request) -> Response:
    actor = authorize(request, "admin")
    new = await read_body(request, NewToken)
    username = await _existing(request)
    token_id, secret = await _auth(request).store.add_token(username, new.label, actor.label())
    return json_response(
        {"id": token_id, "username": username, "label": new.label, "token": secret},
        201,
        secret=True,
    )


@described(summary="Revoke one API token", roles=("admin",), status=204, errors=(404,))
async def revoke_token(request: Request) -> Response:
    actor = authorize(request, "admin")
    username = await _existing(request)
    token_id = request.path_params["token_id"]
    auth = _auth(request)
    hashed = await auth.store.revoke_token(username, token_id, actor.label())
    if hashed is None:
        raise ApiError(404, "not_found", f"{username} has no token {token_id}")
    auth.forget(hashed)
    return Response(status_code=204)


@described(
    summary="Disable an account: its tokens and sessions stop working",
    roles=("admin",),
    answer=Anything,
    errors=(404,),
)
async def disable_account(request: Request) -> Response:
    actor = authorize(request, "admin")
    username = request.path_params["username"]
    auth = _auth(request)
    if not await auth.store.disable(username, actor.label()):
        raise ApiError(404, "not_found", f"no account {username}")
    auth.forget_account(username)
    return json_response({"username": username, "disabled": True})


# ---- browser sessions ---------------------------------------------------------------------


def _refuse(result: AuthResult) -> ApiError:
    if result.failure == "throttled":
        return ApiError(
            429,
            "too_many_failures",
            "too many wrong credentials from this address: wait",
            headers={"Retry-After": str(math.ceil(result.retry_after_s))},
        )
    return ApiError(401, "unauthenticated", "wrong username or password")


def session_lifetime_s(settings: Settings, role: str) -> float:
    """How long a browser sign-in of ``role`` lasts: a wall display's for days (it signs in
    once and runs unattended), everyone else's for a working day or so."""
    if role == "wall":
        return settings.wall_session_days * 86_400
    return settings.session_hours * 3600


@described(
    summary="Sign in: sets the ld_session cookie (HttpOnly, SameSite=Strict)",
    roles=(),
    body=SignIn,
    answer=Anything,
    errors=(401, 403, 415, 429),
)
async def sign_in(request: Request) -> Response:
    _refuse_cross_site(request)
    attempt = await read_body(request, SignIn)
    auth = _auth(request)
    result = await auth.sign_in(attempt.username, attempt.password, client_address(request.scope))
    if result.principal is None:
        raise _refuse(result)
    settings = components(request).settings
    lifetime_s = session_lifetime_s(settings, result.principal.role)
    session_id, expires_at = await auth.store.open_session(result.principal.username, lifetime_s)
    response = json_response(result.principal.public() | {"expires_at": expires_at})
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(lifetime_s),
        path="/",
        httponly=True,
        samesite="strict",
        secure=settings.cookie_secure,
    )
    return response


def _refuse_cross_site(request: Request) -> None:
    """A sign-in comes from our own sign-in page, as JSON. Another site's page could post a
    form to it (a text/plain body can be made to look like JSON) and sign the visitor's
    browser in as someone else, whose name would then stand on what the visitor does."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the body must be application/json, not {media_type or 'unlabelled'}",
            fields={"content-type": "must be application/json"},
        )
    if (
        not same_origin("POST", request.headers)
        or request.headers.get("sec-fetch-site") == "cross-site"
    ):
        raise ApiError(403, "cross_site", "sign in from this site's own sign-in page")


@described(summary="Who the caller is", roles=(), answer=Anything, errors=(401, 429))
async def who_am_i(request: Request) -> Response:
    result = auth_result(request)
    if result.principal is None:
        if result.failure == "throttled":
            raise _refuse(result)
        raise ApiError(401, "unauthenticated", "not signed in")
    return json_response(result.principal.public() | {"via": result.via})


@described(summary="Sign out: the session ends on the server", roles=(), status=204)
async def sign_out(request: Request) -> Response:
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        hashed = secret_hash(session_id)
        auth = _auth(request)
        await auth.store.end_session(hashed)
        auth.forget(hashed)
    response = Response(status_code=204)
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=components(request).settings.cookie_secure,
    )
    return response


def account_routes() -> list[Route]:
    prefix = "/api/v1"
    return [
        Route(f"{prefix}/accounts", create_account, methods=["POST"]),
        Route(f"{prefix}/accounts", list_accounts, methods=["GET"]),
        Route(f"{prefix}/accounts/{{username}}/tokens", add_token, methods=["POST"]),
        Route(
            f"{prefix}/accounts/{{username}}/tokens/{{token_id}}", revoke_token, methods=["DELETE"]
        ),
        Route(f"{prefix}/accounts/{{username}}/disable", disable_account, methods=["POST"]),
        Route(f"{prefix}/session", sign_in, methods=["POST"]),
        Route(f"{prefix}/session", who_am_i, methods=["GET"]),
        Route(f"{prefix}/session", sign_out, methods=["DELETE"]),
    ]
