"""Composition root: the app factory, its lifespan, and this process's hub.

The :class:`Hub` knows only the squads connected to this process. A push for a squad
connected elsewhere goes to the process that holds it, on that process's own Redis channel
(the squad's ``hub`` field names it), never as a broadcast every process must decode. The
outbox in Redis stays the source of truth: a lost channel message is repaired by the phone's
next resume, or by the gap check when the next frame arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgspec
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from dispatch_field import protocol
from dispatch_field.codes import CloseCode
from server.accounts.asgi import AuthMiddleware, PageGate
from server.accounts.auth import Authenticator, open_authenticator
from server.actions import Intake, SquadActions
from server.assign.dispatcher import Dispatcher
from server.center.actions import CenterActions
from server.center.moves import Mover
from server.citizen.delivery import RetryPolicy
from server.citizen.messages import DEFAULT_PATH as DEFAULT_TEMPLATES
from server.citizen.messages import load_templates
from server.citizen.outbox import CitizenOutbox, CitizenSender
from server.citizen.senders import make_sender
from server.citizen.teller import CitizenTeller
from server.city import City, load_city
from server.directory import Directory
from server.feed.broker import FeedBroker
from server.field.session import FieldSession
from server.guard import AddressBuckets
from server.known import KnownRequests
from server.ledger import Ledger, default_database_url, highest_request_number
from server.ledger.streams import with_no_unit
from server.loops import background_loops
from server.net import BodyLimit
from server.notices import Notices
from server.presence.tracker import PresenceTracker
from server.security_headers import SecurityHeaders
from server.settings import Settings, load_settings
from server.store import keys
from server.store.availability import RedisAvailability, is_outage
from server.store.embedded import EmbeddedRedis
from server.store.positions import PositionWriter
from server.store.requests import RequestStore
from server.store.round_trips import RoundTrips, count_round_trips
from server.store.scripts import Scripts
from server.store.squads import Presence, SquadStore
from server.store.text import text

log = logging.getLogger(__name__)
_channel_codec = msgspec.msgpack.Decoder(tuple[str, int, bytes])
_channel_encoder = msgspec.msgpack.Encoder()


class Hub:
    """This process's squad connections, and the route of every push."""

    def __init__(self, hub_id: str, services: Services) -> None:
        self.id = hub_id
        self._services = services
        self.sessions: dict[str, FieldSession] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def joined(self, session: FieldSession) -> Presence:
        squad, unit = session.info.squad, session.info.unit
        previous = self.sessions.get(squad)
        if previous is not None and previous is not session:
            previous.close(CloseCode.REPLACED, "a newer connection of this squad took over")
        self.sessions[squad] = session
        presence = await self._services.squads.connect(unit, squad, self.id, session.info.conn_id)
        if presence.on_duty:
            self.drain_soon(unit)
        return presence

    async def left(self, session: FieldSession) -> None:
        squad = session.info.squad
        if not squad:
            return
        if self.sessions.get(squad) is session:
            del self.sessions[squad]
        unit = session.info.unit
        try:
            if await self._services.squads.disconnect(unit, squad, session.info.conn_id):
                await self._services.redis.srem(keys.hub_squads(self.id), f"{unit}/{squad}")
                await self._services.presence.went_offline(unit, squad)
        except Exception as exc:  # noqa: BLE001 - Redis down: reconcile() catches up
            if is_outage(exc):
                self._services.availability.failed("squad offline", exc)
            else:
                log.exception("could not record %s offline; reconcile() will", squad)

    async def reconcile(self, *, everyone: bool = False) -> int:
        """Squads Redis believes are connected here but are not (a disconnect that could not
        be recorded, e.g. during a Redis restart): take them offline now. ``everyone``: all of
        this process's squads (it is shutting down)."""
        services = self._services
        stale = 0
        for member in await services.redis.smembers(keys.hub_squads(self.id)):
            unit, _, squad = text(member).partition("/")
            if squad in self.sessions and not everyone:
                continue
            if await services.squads.disconnect(unit, squad, self.id, by_hub=True):
                await services.presence.went_offline(unit, squad)
                stale += 1
            await services.redis.srem(keys.hub_squads(self.id), member)
        return stale

    async def push(self, unit: str, squad: str, seq: int, body: bytes, hub: str) -> None:
        """Deliver a numbered frame that is already in the squad's outbox."""
        if hub == self.id:
            self.deliver(squad, seq, body)
        elif hub:
            message = _channel_encoder.encode((squad, seq, body))
            await self._services.redis.publish(keys.hub_channel(hub), message)
        # No hub: the squad is offline; the frame waits in its outbox for the resume.

    def deliver(self, squad: str, seq: int, body: bytes) -> None:
        session = self.sessions.get(squad)
        if session is not None:
            session.push_numbered(seq, body)

    def receive_channel_message(self, data: bytes) -> None:
        squad, seq, body = _channel_codec.decode(data)
        self.deliver(squad, seq, body)

    def drain_soon(self, unit: str, after_s: float = 0.0) -> None:
        """Move the unit's queue in the background (a squad became available), now or once
        ``after_s`` has passed (a first position must reach Redis first)."""
        self.spawn(self._drain_after(unit, after_s))

    async def _drain_after(self, unit: str, after_s: float) -> None:
        if after_s:
            await asyncio.sleep(after_s)
        await self._services.dispatcher.drain(unit)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    def close_silent(self, silent_for_s: float) -> int:
        """Close sessions that sent nothing for ``silent_for_s``; they may resume later."""
        limit = time.monotonic() - silent_for_s
        silent = [s for s in self.sessions.values() if s.last_heard < limit]
        for session in silent:
            session.close(CloseCode.HEARTBEAT_TIMEOUT, "silent too long")
        return len(silent)


@dataclass
class Services:
    """Everything the routes and sessions use, created in the lifespan."""

    settings: Settings
    redis: Redis
    directory: Directory
    scripts: Scripts
    requests: RequestStore
    squads: SquadStore
    positions: PositionWriter
    sender: CitizenSender  # hands the citizen's messages to the phone network
    dispatcher: Dispatcher = field(init=False)
    citizen: CitizenTeller = field(init=False)  # composes and queues the citizen's messages
    feed: FeedBroker = field(init=False)  # live events for this process's center feeds
    intake: Intake = field(init=False)
    actions: SquadActions = field(init=False)
    center: CenterActions = field(init=False)
    hub: Hub = field(init=False)
    presence: PresenceTracker = field(init=False)
    notices: Notices = field(init=False)
    ledger: Ledger | None = None
    availability: RedisAvailability = field(default_factory=RedisAvailability)
    round_trips: RoundTrips = field(default_factory=RoundTrips)
    auth: Authenticator | None = None  # accounts and sign-in, opened with the ledger
    failed_hellos: AddressBuckets = field(init=False)  # per client address

    @property
    def city(self) -> City:
        return self.directory.city


def new_hub_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


def build_services(
    settings: Settings, redis: Redis, city: City, ledger: Ledger | None = None
) -> Services:
    """The services of one process. ``ledger``: where request numbers resume when Redis
    lost its counters (None: nowhere, e.g. in tests without a ledger)."""
    scripts = Scripts.register(redis)
    requests = RequestStore(
        redis,
        scripts,
        events_maxlen=settings.events_maxlen,
        command_memory_s=settings.command_memory_s,
        outbox_max_frames=settings.outbox_max_frames,
        zone=city.zone,
        id_block=settings.request_id_block,
        highest_recorded=partial(highest_request_number, ledger) if ledger else None,
    )
    services = Services(
        settings=settings,
        redis=redis,
        directory=Directory(redis, city),
        scripts=scripts,
        requests=requests,
        squads=SquadStore(redis, scripts),
        positions=PositionWriter(redis, settings.position_flush_ms / 1000),
        sender=make_sender(settings),
        ledger=ledger,
    )
    per_min = settings.hello_failures_per_min
    services.failed_hellos = AddressBuckets(rate=per_min / 60, burst=max(1.0, per_min))
    services.hub = Hub(new_hub_id(), services)
    known = KnownRequests()  # offers made here, steps committed here: read by no one else
    services.dispatcher = Dispatcher(
        redis, scripts, requests, settings, services.hub.push, known=known
    )
    services.citizen = _citizen_teller(settings, redis, scripts, services.directory)
    services.feed = FeedBroker(
        redis,
        lambda: with_no_unit(services.directory.unit_codes()),
        settings.feed_batch,
        services.availability.failed,
    )
    services.intake = Intake(
        services.directory, requests, services.dispatcher, services.citizen, settings.time_scale
    )
    services.center = CenterActions(
        requests,
        Mover(redis, scripts, settings.events_maxlen),
        services.dispatcher,
        services.hub.push,
        services.hub.drain_soon,
        services.directory,
        services.citizen,
        settings.time_scale,
    )
    services.actions = SquadActions(
        redis,
        requests,
        services.citizen,
        settings,
        on_closed=services.center.lead_closed,
        cities=services.directory,
        known=known,
    )
    services.notices = Notices(redis, scripts, requests, settings, services.hub.push)
    services.presence = PresenceTracker(
        redis, services.squads, requests, services.dispatcher, settings, services.hub.id
    )
    return services


def _citizen_teller(
    settings: Settings, redis: Redis, scripts: Scripts, directory: Directory
) -> CitizenTeller:
    """The citizen's messages: templates checked now (a bad file stops the start), the
    outbox with the retry rules of ``settings``."""
    templates = load_templates(settings.citizen_templates or DEFAULT_TEMPLATES)
    policy = RetryPolicy(
        base_s=settings.citizen_retry_base_s,
        cap_s=settings.citizen_retry_cap_s,
        max_attempts=settings.citizen_max_attempts,
        max_age_s=settings.citizen_max_age_s,
    )
    outbox = CitizenOutbox(
        redis,
        scripts,
        policy,
        lease_s=settings.citizen_webhook_timeout_s + 5,  # a send ends (times out) before
        keep_s=settings.citizen_keep_s,
        events_maxlen=settings.events_maxlen,
    )
    return CitizenTeller(outbox, templates, lambda: directory.city)


# ---- the app ------------------------------------------------------------------------------


async def field_socket(ws: WebSocket) -> None:
    services: Services = ws.app.state.services
    offered = ws.scope.get("subprotocols") or []
    chosen = next((p for p in offered if p in protocol.SUBPROTOCOLS), None)
    await ws.accept(subprotocol=chosen)
    if chosen is None:
        await ws.close(
            CloseCode.UNSUPPORTED_SUBPROTOCOL,
            f"use one of the subprotocols {', '.join(protocol.SUBPROTOCOLS)}",
        )
        return
    await FieldSession(ws, services, chosen == protocol.SUBPROTOCOL_JSON).run()


def create_app(settings: Settings | None = None) -> Starlette:
    """The ASGI app. With ``settings.redis_url`` unset, its lifespan starts the embedded Redis
    (data in ``data_dir``) and stops it at shutdown."""
    from server.api.accounts import account_routes
    from server.api.center import center_routes
    from server.api.citizen import citizen_routes
    from server.api.common import error_handlers
    from server.api.notices import notice_routes
    from server.api.reports import report_routes
    from server.api.routes import api_routes
    from server.feed.session import center_socket
    from server.web import static_dir

    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with _redis_url(settings) as url, _running(app, settings, url):
            yield

    routes = [
        *api_routes(),
        *account_routes(),
        *center_routes(),
        *notice_routes(),
        *report_routes(),
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
async def _running(app: Starlette, settings: Settings, url: str) -> AsyncIterator[None]:
    """Services and background loops, from start-up to shutdown."""
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
    # The ledger before the services: request numbers resume from it (see server.ids).
    ledger = await Ledger.open(settings.database_url or default_database_url(settings.data_dir))
    services = build_services(settings, redis, city, ledger)
    services.round_trips = round_trips
    await services.scripts.load(redis)  # no NOSCRIPT detour on any script's first call
    await services.directory.refresh()
    app.state.services = services
    app.state.components = services
    await services.presence.beat()
    services.auth = await open_authenticator(
        ledger.engine, settings, lambda code: services.city.unit(code) is not None
    )
    loops = [asyncio.create_task(coro) for coro in background_loops(services)]
    if settings.ledger_in_hub:  # else ``python -m server.ledger`` records, in its own process
        loops.append(
            asyncio.create_task(
                ledger.consume(redis, services.directory.unit_codes, services.hub.id)
            )
        )
    log.info("hub %s ready", services.hub.id)
    try:
        yield
    finally:
        for session in list(services.hub.sessions.values()):
            session.close(CloseCode.SERVER_RESTART, "hub shutting down: reconnect")
        for task in loops:
            task.cancel()
        _, stuck = await asyncio.wait(loops, timeout=3)
        for task in stuck:
            log.warning("background loop did not stop: %r", task.get_stack())
        with contextlib.suppress(Exception):
            await services.feed.close()
            await services.sender.close()
        with contextlib.suppress(Exception):
            await services.positions.flush()
            await services.hub.reconcile(everyone=True)
            await services.presence.leave()
        await ledger.close()
        await redis.aclose()


__all__ = ["Hub", "Services", "create_app", "Route"]
