"""The parts of one hub process, built once, in dependency order, by
:func:`build_components`; nothing is filled in after construction.

Each part takes the few others it uses. :class:`Components` holds them all for the two
places that legitimately see everything: the app's lifespan (:mod:`server.app`), which
starts and stops them, and the HTTP handlers (through ``components(request)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from redis.asyncio import Redis

from server.accounts.auth import Authenticator
from server.actions import Intake, SquadActions
from server.assign.dispatcher import Dispatcher
from server.background import Background
from server.broker import Broker
from server.center.actions import CenterActions
from server.center.moves import Mover
from server.citizen.delivery import RetryPolicy
from server.citizen.messages import DEFAULT_PATH as DEFAULT_TEMPLATES
from server.citizen.messages import load_templates
from server.citizen.outbox import CitizenOutbox, CitizenSender
from server.citizen.senders import make_sender
from server.citizen.teller import CitizenTeller
from server.city import City
from server.directory import Directory
from server.feed.broker import FeedBroker
from server.guard import AddressBuckets
from server.hub import Hub
from server.known import KnownRequests
from server.ledger import Ledger, highest_request_number
from server.ledger.streams import with_no_unit
from server.metrics import Metrics
from server.notices import Notices
from server.presence.tracker import PresenceTracker
from server.settings import Settings
from server.store import timers
from server.store.availability import RedisAvailability
from server.store.positions import PositionWriter
from server.store.requests import RequestStore
from server.store.round_trips import RoundTrips
from server.store.scripts import Scripts
from server.store.squads import SquadStore
from server.store.tracks import TrackRecorder
from server.webpush.pusher import WebPush


@dataclass
class Readiness:
    """Whether this process takes new connections: not while it drains for a restart."""

    draining: bool = False


@dataclass(frozen=True)
class Components:
    settings: Settings
    redis: Redis
    directory: Directory
    scripts: Scripts
    requests: RequestStore
    squads: SquadStore
    positions: PositionWriter
    sender: CitizenSender  # hands the citizen's messages to the phone network
    hub: Hub  # this process's squad connections
    broker: Broker  # pushes to squads on any process
    background: Background
    dispatcher: Dispatcher
    citizen: CitizenTeller  # composes and queues the citizen's messages
    feed: FeedBroker  # live events for this process's center feeds
    intake: Intake
    actions: SquadActions
    center: CenterActions
    presence: PresenceTracker
    notices: Notices
    availability: RedisAvailability
    failed_hellos: AddressBuckets  # per client address
    webpush: WebPush  # offers and notices to the phones' push services
    metrics: Metrics
    held_timers: timers.Held  # claimed here, not finished: handed on at shutdown
    readiness: Readiness  # ready to take connections, or draining
    ledger: Ledger | None = None
    auth: Authenticator | None = None  # accounts and sign-in, opened with the ledger
    round_trips: RoundTrips = field(default_factory=RoundTrips)

    @property
    def city(self) -> City:
        return self.directory.city


def build_components(
    settings: Settings,
    redis: Redis,
    city: City,
    ledger: Ledger | None = None,
    *,
    auth: Authenticator | None = None,
    round_trips: RoundTrips | None = None,
    hub: Hub | None = None,
) -> Components:
    """The parts of one process. ``ledger``: where request numbers resume when Redis lost
    its counters (None: nowhere, e.g. in tests without a ledger)."""
    scripts = Scripts.register(redis)
    requests = RequestStore(
        redis,
        scripts,
        events_maxlen=settings.events_maxlen,
        command_memory_s=settings.command_memory_s,
        outbox_max_frames=settings.outbox_max_frames,
        zone=city.zone,
        id_block=settings.request_id_block,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
        highest_recorded=partial(highest_request_number, ledger) if ledger else None,
    )
    directory = Directory(redis, city)
    squads = SquadStore(redis, scripts)
    availability = RedisAvailability()
    hub = hub or Hub()
    webpush = WebPush(redis, settings, availability.failed)
    broker = Broker(redis, hub, availability, on_push=webpush.on_numbered)
    background = Background()
    metrics = Metrics()
    positions = PositionWriter(
        redis,
        settings.position_flush_ms / 1000,
        TrackRecorder(
            redis, settings.track_interval_s, settings.track_points, settings.track_keep_s
        ),
    )
    round_trips = round_trips or RoundTrips()
    metrics.live.connections = lambda: len(hub.sessions)
    metrics.live.positions = lambda: positions.written
    metrics.live.round_trips = lambda: round_trips.count
    metrics.live.webpush = webpush.counts
    known = KnownRequests()  # offers made here, steps committed here: read by no one else
    dispatcher = Dispatcher(
        redis,
        scripts,
        requests,
        settings,
        broker.push,
        known=known,
        background=background,
        metrics=metrics,
    )
    citizen = _citizen_teller(settings, redis, scripts, directory)
    center = CenterActions(
        requests,
        Mover(redis, scripts, settings.events_maxlen),
        dispatcher,
        broker.push,
        dispatcher.drain_soon,
        directory,
        citizen,
        settings.time_scale,
    )
    per_min = settings.hello_failures_per_min
    return Components(
        settings=settings,
        redis=redis,
        directory=directory,
        scripts=scripts,
        requests=requests,
        squads=squads,
        positions=positions,
        sender=make_sender(settings),
        hub=hub,
        broker=broker,
        background=background,
        dispatcher=dispatcher,
        citizen=citizen,
        feed=FeedBroker(
            redis,
            lambda: with_no_unit(directory.unit_codes()),
            settings.feed_batch,
            availability.failed,
        ),
        intake=Intake(directory, requests, dispatcher, citizen, settings.time_scale, metrics),
        actions=SquadActions(
            redis,
            requests,
            citizen,
            settings,
            on_closed=center.lead_closed,
            cities=directory,
            known=known,
        ),
        center=center,
        presence=PresenceTracker(
            redis, squads, requests, dispatcher, settings, hub, availability, positions
        ),
        notices=Notices(redis, scripts, requests, settings, broker.push, metrics),
        availability=availability,
        failed_hellos=AddressBuckets(rate=per_min / 60, burst=max(1.0, per_min)),
        webpush=webpush,
        ledger=ledger,
        auth=auth,
        round_trips=round_trips,
        metrics=metrics,
        held_timers=timers.Held(),
        readiness=Readiness(),
    )


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
