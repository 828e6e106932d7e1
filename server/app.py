"""The ASGI app: its routes, its middleware, and a lifespan that builds the process's
:class:`~server.components.Components`, runs its background loops, and takes everything
down again at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, WebSocketRoute
from starlette.staticfiles import StaticFiles

from dispatch_field.codes import CloseCode
from server.accounts.asgi import AuthMiddleware, PageGate
from server.accounts.auth import open_authenticator
from server.api.accounts import account_routes
from server.api.center import center_routes
from server.api.citizen import citizen_routes
from server.api.common import error_handlers
from server.api.field import field_routes
from server.api.notices import notice_routes
from server.api.routes import api_routes
from server.city import load_city
from server.components import Components, build_components
from server.feed.session import center_socket
from server.field.socket import field_socket
from server.ledger import Ledger, default_database_url
from server.loops import background_loops
from server.net import BodyLimit
from server.security_headers import SecurityHeaders
from server.settings import Settings, load_settings
from server.store.embedded import EmbeddedRedis
from server.store.round_trips import count_round_trips
from server.web import static_dir

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
        *field_routes(),
        WebSocketRoute("/ws/field", field_socket),
        WebSocketRoute("/ws/center", center_socket),
        *citizen_routes(),
        Mount("/", app=PageGate(StaticFiles(directory=static_dir(), html=True)), name="web"),
    ]
    # Outermost first: every answer (a 413 too) carries the security headers; an oversized
    # body is refused before anyone reads it, credentials included.
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
        Middleware(AuthMiddleware),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers=error_handlers(),
    )


@contextlib.asynccontextmanager
async def _redis_url(settings: Settings) -> AsyncIterator[str]:
    """The configured Redis, or an embedded one for the lifetime of the app."""
    if settings.redis_url:
        yield settings.redis_url
        return
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
    # A blocking pool: a burst (thousands of phones reconnecting) waits for a connection
    # instead of failing; Redis answers in microseconds, so a few dozen are plenty.
    # A command on a connection that died (Redis restarted) reconnects and is sent again,
    # with backoff, for about 1.5 s: every script is idempotent by its ids (a retried step
    # finds its command id or version already moved and says so), so a retry is safe.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=settings.redis_connections,
        timeout=10,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.8, base=0.05), 5),
    )
    round_trips = count_round_trips(pool)
    redis = Redis(connection_pool=pool)
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
        loops.append(
            asyncio.create_task(ledger.consume(redis, parts.directory.unit_codes, parts.hub.id))
        )
    log.info("hub %s ready", parts.hub.id)
    try:
        yield parts
    finally:
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
            await parts.positions.flush()
            await parts.presence.reconcile(everyone=True)
            await parts.presence.leave()
        await ledger.close()
        await redis.aclose()
