"""The HTTP edge of authentication: a middleware that turns each request's credentials into
an :class:`AuthResult` (read by the routes through :func:`auth_result`), and the gate that
sends a browser without a session to the sign-in page.

Pure ASGI (no BaseHTTPMiddleware): nothing is buffered, WebSockets pass untouched.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import HTTPConnection, cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from server.accounts.auth import NOBODY, Authenticator, AuthResult
from server.accounts.model import SESSION_COOKIE

log = logging.getLogger(__name__)

SIGNIN_PAGE = "/signin.html"
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def auth_result(connection: HTTPConnection) -> AuthResult:
    """What :class:`AuthMiddleware` found for this request (NOBODY if it did not run)."""
    result = connection.scope.get("state", {}).get("auth", NOBODY)
    assert isinstance(result, AuthResult)
    return result


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "?"


class AuthMiddleware:
    """Authenticates every HTTP request that carries a bearer token or a session cookie
    (the app's ``state.components.auth``). Answers by itself only when the accounts' database
    cannot be read (503, retry: credentials verified recently keep working from the cache);
    otherwise a route decides whether it needs a principal."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._warned_at = -math.inf

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            components = getattr(scope["app"].state, "components", None)
            authenticator: Authenticator | None = getattr(components, "auth", None)
            try:
                result = (
                    NOBODY if authenticator is None else await _authenticate(scope, authenticator)
                )
            except (SQLAlchemyError, OSError) as exc:
                self._warn(exc)
                await _unavailable(send)
                return
            scope.setdefault("state", {})["auth"] = result
        await self.app(scope, receive, send)

    def _warn(self, exc: Exception) -> None:
        """One line a minute while the database is away, not one per request."""
        now = time.monotonic()
        if now - self._warned_at >= 60:
            self._warned_at = now
            log.warning(
                "accounts database unreachable (%s: %s): answering 503", type(exc).__name__, exc
            )


async def _unavailable(send: Send) -> None:
    body = b'{"error":{"code":"unavailable","message":"accounts unreachable: retry","fields":{}}}'
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _authenticate(scope: Scope, authenticator: Authenticator) -> AuthResult:
    headers = _headers(scope)
    address = client_address(scope)
    authorization = headers.get("authorization", "")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return AuthResult(None, "token", "invalid")
        return await authenticator.from_token(token.strip(), address)
    session = cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE)
    if not session or not same_origin(scope["method"], headers):
        return NOBODY
    return await authenticator.from_session(session, address)


async def authenticate_connection(scope: Scope, authenticator: Authenticator) -> AuthResult:
    """The credentials of a WebSocket handshake (the middleware handles HTTP only): a bearer
    token, or a session cookie from a page of this site (another site's page cannot open a
    socket with the user's cookie). Raises what the accounts' database raises."""
    return await _authenticate({**scope, "method": "WEBSOCKET"}, authenticator)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


def same_origin(method: str, headers: Mapping[str, str]) -> bool:
    """A cookie only counts on a state-changing request sent by our own pages (SameSite=Strict
    already keeps it off other sites' requests; this is the second lock)."""
    if method in _SAFE_METHODS:
        return True
    origin = headers.get("origin")
    return origin is None or urlsplit(origin).netloc == headers.get("host", "")


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site (``/wall.html?lang=en``), else ``/``: never
    another origin (``//evil``, ``https://…``, ``/\\evil``)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(ord(c) < 0x20 for c in target):
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


# The squad phone app: a squad has no person session; its socket (and the field API)
# authenticate with the squad's token, and these pages hold no data of their own.
PUBLIC_FOLDERS = ("/phone/",)


class PageGate:
    """Wraps the static files: an ``.html`` page (or a folder's index) needs a signed-in
    session; without one the browser is sent (303) to the sign-in page, which comes back to
    the page after. The sign-in page, the assets (css, js, images) and the pages of
    :data:`PUBLIC_FOLDERS` are public."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _is_page(scope["path"]):
            result = auth_result(HTTPConnection(scope))
            if result.principal is None or result.via != "cookie":
                await _redirect_to_signin(scope, send)
                return
        await self.app(scope, receive, send)


def _is_page(path: str) -> bool:
    if path == SIGNIN_PAGE:
        return False
    if any(segment in (".", "..") for segment in path.split("/")):
        # "/center.html/." or "/phone/../wall.html": the static files resolve the dots to
        # a page, so such a path is gated as the page it may name.
        return True
    if _in_public_folder(path):
        return False
    return path.endswith(".html") or path.endswith("/")


def _in_public_folder(path: str) -> bool:
    return path.startswith(PUBLIC_FOLDERS)


async def _redirect_to_signin(scope: Scope, send: Send) -> None:
    target = scope["path"]
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        target += "?" + query
    location = f"{SIGNIN_PAGE}?next={quote(target, safe='')}"
    headers: list[tuple[bytes, Any]] = [
        (b"location", location.encode("latin-1")),
        (b"content-length", b"0"),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
