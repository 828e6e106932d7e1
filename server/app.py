"""The ASGI app: its routes, its middleware, and a lifespan that builds the process's
:class:`~server.components.Components`, runs its background loops, and takes everything
down again at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from prometheus_client import start_http_server
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from dispatch_field.codes import SERVICE_RESTART, CloseCode
from server.accounts.asgi import AuthMiddleware, PageGate
from server.accounts.auth import open_authenticator
from server.api.accounts import account_routes
from server.api.center import center_routes
from server.api.citizen import citizen_routes
from server.api.common import error_handlers
from server.api.console import console_routes
from server.api.field import field_routes
from server.api.intake import intake_routes
from server.api.notices import notice_routes
from server.api.operations import operation_routes
from server.api.reports import report_routes
from server.api.routes import api_routes
from server.city import load_city
from server.components import Components, build_components
from server.feed.session import center_socket
from server.field.socket import FieldSocket
from server.ledger import Ledger, default_database_url
from server.ledger.running import ledger_loops
from server.loops import background_loops
from server.net import BodyLimit
from server.security_headers import SecurityHeaders
from server.settings import Settings, SettingsError, load_settings
from server.store.availability import is_outage
from server.store.cluster import open_client
from server.store.embedded import EmbeddedRedis
from server.wallmap.routes import wallmap_routes
from server.web import page_routes, static_dir

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Starlette:
    """The ASGI app. With ``settings.redis_url`` unset, its lifespan starts the embedded Redis
    (data in ``data_dir``) and stops it at shutdown."""
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with _redis_url(settings) as url, _running(settings, url) as components:
            app.state.components = components
            yield

    routes = [
        *api_routes(),
        *account_routes(),
        *center_routes(),
        *notice_routes(),
        *console_routes(),
        *intake_routes(),
        *field_routes(),
        WebSocketRoute(FIELD_SOCKET_PATH, FieldSocket()),
        WebSocketRoute("/ws/center", center_socket),
        *citizen_routes(),
        *operation_routes(),
        *report_routes(),
        *wallmap_routes(),
        *page_routes(),
        Mount("/", app=PageGate(StaticFiles(directory=static_dir(), html=True)), name="web"),
    ]
    # Outermost first: every answer (a 413 too) carries the security headers; an oversized
    # body is refused before anyone reads it, credentials included.
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
        Middleware(AuthMiddleware),
    ]
    return HubApp(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers=error_handlers(),
    )


FIELD_SOCKET_PATH = "/ws/field"


class HubApp(Starlette):
    """The app, with one shortcut: a squad phone's socket (``/ws/field``) goes straight to
    its handler. The middleware leaves every WebSocket untouched (security headers and a
    body limit are HTTP's; credentials come in the phone's hello), so the shortcut changes
    nothing a phone sees; it spares each connection the await chain of the middleware and
    the router, a dozen coroutines kept alive for as long as the phone is connected. With
    10,000 phones that is 120,000 objects fewer for the garbage collector to walk, and a
    reconnect storm passes them 10,000 times. The route stays listed, and its handler is
    the one the shortcut calls."""

    def __init__(self, *, routes: list[BaseRoute], **kwargs: Any) -> None:
        super().__init__(routes=routes, **kwargs)
        self._field_socket = next(
            r.app for r in routes if isinstance(r, WebSocketRoute) and r.path == FIELD_SOCKET_PATH
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == FIELD_SOCKET_PATH:
            scope["app"] = self
            await self._field_socket(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


@contextlib.asynccontextmanager
async def _redis_url(settings: Settings) -> AsyncIterator[str]:
    """The configured Redis, or an embedded one for the lifetime of the app."""
    if settings.redis_url:
        yield settings.redis_url
        return
    if settings.redis_cluster:
        raise SettingsError("DISPATCH_REDIS_CLUSTER=1 needs REDIS_URL (a node of the cluster)")
    embedded = EmbeddedRedis(os.path.join(settings.data_dir, "redis"))
    await asyncio.to_thread(embedded.start)
    # public_url: the URL without its password (never logged)
    log.warning("embedded Redis 6.2 at %s (AOF in %s)", embedded.public_url, embedded.data_dir)
    try:
        yield embedded.url
    finally:
        await asyncio.to_thread(embedded.stop)


@contextlib.asynccontextmanager
async def _running(settings: Settings, url: str) -> AsyncIterator[Components]:
    """The process's components and background loops, from start-up to shutdown."""
    redis, round_trips = open_client(url, settings)  # single Redis or cluster: store.cluster
    city = load_city(settings.config_path)
    # The ledger first: request numbers resume from it (see server.ids); accounts live in it.
    ledger = await Ledger.open(settings.database_url or default_database_url(settings.data_dir))
    parts = build_components(settings, redis, city, ledger, round_trips=round_trips)
    await parts.scripts.load(redis)  # no NOSCRIPT detour on any script's first call
    await parts.directory.refresh()  # units added at run time too, for the accounts' check
    auth = await open_authenticator(
        ledger.engine, settings, lambda code: parts.city.unit(code) is not None
    )
    parts = dataclasses.replace(parts, auth=auth)
    await parts.presence.beat()
    loops = [asyncio.create_task(coro) for coro in background_loops(parts)]
    if settings.ledger_in_hub:  # else ``python -m server.ledger`` records, in its own process
        loops += [
            asyncio.create_task(loop)
            for loop in ledger_loops(
                ledger, redis, parts.directory.unit_codes, parts.hub.id, settings
            )
        ]
    exporter = (
        start_http_server(settings.metrics_port, settings.metrics_host, parts.metrics.registry)
        if settings.metrics_port
        else None
    )
    log.info("hub %s ready", parts.hub.id)
    try:
        yield parts
    finally:
        if exporter is not None:
            exporter[0].shutdown()
        parts.hub.close_all(CloseCode.SERVER_RESTART, "hub shutting down: reconnect")
        for task in loops:
            task.cancel()
        _, stuck = await asyncio.wait(loops, timeout=3)
        for task in stuck:
            log.warning("background loop did not stop: %r", task.get_stack())
        with contextlib.suppress(Exception):
            await parts.feed.close()
            await parts.sender.close()
        with contextlib.suppress(Exception):
            if handed := await parts.held_timers.hand_on(redis):
                log.info("%d timers handed on to the other processes", handed)
        with contextlib.suppress(Exception):
            await parts.positions.flush()
            await parts.presence.reconcile(everyone=True)
            await parts.presence.leave()
        await ledger.close()
        await redis.aclose()


# A healthy Redis steps a slice aside in milliseconds: past this, the drain goes on without.
STEP_ASIDE_TIMEOUT_S = 1.0


async def drain(app: Starlette, stop_listening: Callable[[], None]) -> None:
    """Before the server stops: say not ready (a load balancer's check notices within
    ``drain_wait_s``), then tell this process's phones to reconnect elsewhere (1012), spread
    over ``drain_spread_s`` in small slices, so they do not all come back at once. Each slice
    steps aside first (``PresenceTracker.step_aside``): out of dispatch candidacy until its
    hello on another process, so no new offer waits for a phone between hubs. Those phones
    are not recorded offline as they go (they resume elsewhere: see
    ``PresenceTracker.handing_over``). The lifespan's end then hands the timers this process
    holds on to the others, and records offline whoever is not back elsewhere. Redis away
    (refused, or no answer within :data:`STEP_ASIDE_TIMEOUT_S`): the slices left are closed
    without stepping aside, at their time."""
    parts: Components | None = getattr(app.state, "components", None)
    if parts is None:
        stop_listening()
        return
    settings = parts.settings
    parts.readiness.draining = True
    log.warning("hub %s draining: not ready; phones told to reconnect elsewhere", parts.hub.id)
    await asyncio.sleep(settings.drain_wait_s)
    stop_listening()
    parts.presence.handing_over = True  # the phones' next hello is on another process
    sessions = list(parts.hub.sessions.values())
    slices = max(1, min(len(sessions), int(settings.drain_spread_s * 20)))  # every 50 ms
    # Each slice at its own time from the start: the step aside's round trip and the closes
    # do not stretch the spread.
    loop = asyncio.get_running_loop()
    started = loop.time()
    stepping_aside = True
    for index in range(slices):
        part = sessions[index::slices]
        try:  # no new offer to a phone about to be closed: it is a candidate again on hello
            if stepping_aside:
                async with asyncio.timeout(STEP_ASIDE_TIMEOUT_S):
                    await parts.presence.step_aside(part)
        except Exception as exc:  # noqa: BLE001 - Redis down: the phones must move anyway
            if is_outage(exc):  # (a timeout too)
                # Redis is away: the other slices go without, at their time. Each would
                # otherwise spend the client's retries first (seconds), and a restart during
                # an outage would hold the last phones for minutes.
                stepping_aside = False
                parts.availability.failed("step aside", exc)
            else:
                log.exception("could not take %d squads out of dispatch first", len(part))
        for session in part:
            session.close(SERVICE_RESTART, "hub restarting: reconnect")
        if index < slices - 1:
            due = started + (index + 1) * settings.drain_spread_s / slices
            await asyncio.sleep(max(0.0, due - loop.time()))
