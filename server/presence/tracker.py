"""Presence: what happens when a squad goes offline, and when a hub process dies.

A squad is online while it has a live socket on a live hub (and keeps talking: a session
silent beyond ``offline_after_s`` is closed by its hub). When it goes offline:

* at once it leaves the available set (no new offers; ``disconnect.lua``);
* after ``offline_after_s`` still offline, its unanswered offers are revoked and passed on;
* after ``offline_alert_s`` still offline while holding accepted work, the center is told
  (a ``squad_offline`` event on each request it holds).

Both are timers in the unit's Redis timer set, so any living hub process carries them out.

A draining process (``server.app.drain``) moves its squads to the others instead: each slice
of phones steps aside (out of dispatch candidacy, still online and on duty) just before it is
told to reconnect elsewhere, and is a candidate again on its hello there; meanwhile nobody
records it offline, unless it is not back when the process ends.

Each hub process records a heartbeat; one that stops beating for ``hub_dead_after_s`` is dead
(``kill -9``, machine lost): a living process claims it (one ZREM wins), and marks its squads
offline, unless they already reconnected elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from redis.asyncio import Redis

from server.assign.dispatcher import Dispatcher
from server.hub import Connection, Hub
from server.settings import Settings
from server.store import keys, timers
from server.store.availability import RedisAvailability, is_outage
from server.store.positions import PositionWriter
from server.store.requests import Actor, RequestStore, event_json
from server.store.squads import Presence, SquadStore, hub_member, parse_hub_member
from server.store.text import text
from server.store.timers import TimerKind

log = logging.getLogger(__name__)


class Session(Connection, Protocol):
    """What presence needs of a squad's connection: who it is, and its connection id (a
    disconnect is recorded only by the connection that is still the squad's)."""

    @property
    def conn_id(self) -> str: ...


PRESENCE = Actor("system", "presence")
# Squads reconciled at once (a shutdown reconciles every squad of the process: thousands).
RECONCILE_CONCURRENCY = 32


class PresenceTracker:
    """Records this process's squads online and offline in Redis, and carries out the
    presence timers of every unit."""

    def __init__(
        self,
        redis: Redis,
        squads: SquadStore,
        requests: RequestStore,
        dispatcher: Dispatcher,
        settings: Settings,
        hub: Hub,
        availability: RedisAvailability,
        positions: PositionWriter,
    ) -> None:
        self._redis = redis
        self._squads = squads
        self._requests = requests
        self._dispatcher = dispatcher
        self._settings = settings
        self._hub = hub
        self._hub_id = hub.id
        self._availability = availability
        self._positions = positions
        # Set by the drain once this process tells its phones to reconnect elsewhere.
        self.handing_over = False

    # ---- this process's squads ------------------------------------------------------------

    async def joined(self, session: Session, token: str, last_seq: int) -> Presence | None:
        """The squad of ``session`` (its unit known) says hello with ``token``, having seen
        its frames up to ``last_seq``: None if the token is not its own (nothing changed).
        Else it is online here: recorded in Redis (one round trip, which also reads what the
        resume needs: :meth:`SquadStore.connect`) and registered with the hub, closing an
        older connection of the same squad. Its unit's queue moves if it is on duty."""
        unit, squad = session.unit, session.squad
        hub = self._hub
        hub.expect(session)  # a frame numbered after its outbox is read reaches it too
        try:
            presence = await self._squads.connect(
                unit, squad, token, last_seq, self._hub_id, session.conn_id
            )
        finally:
            hub.unexpect(session)
        if presence is not None:
            hub.register(session)
            if presence.on_duty:
                self._dispatcher.drain_soon(unit)
        return presence

    def _timers_at(self) -> tuple[float, float]:
        """When the offline and the alert timers of a squad going offline now are due."""
        now, s = time.time(), self._settings
        return now + s.offline_after_s, now + s.offline_alert_s

    async def left(self, session: Session) -> None:
        """The connection of ``session`` ended. Recorded offline (and its offline timers
        started) unless a newer connection of the squad took over, in one round trip; if
        Redis cannot be told now, :meth:`reconcile` catches up."""
        squad, unit = session.squad, session.unit
        if not squad:
            return  # no hello accepted on it
        self._hub.unregister(session)
        if self.handing_over:
            # Told to resume on another process (the drain): that process takes the squad
            # over in Redis within a second. Recording it offline meanwhile would take it out
            # of dispatch for its move, start its offline timers, and cost thousands of Redis
            # calls at once; whoever does not come back is recorded offline by the shutdown's
            # reconcile(everyone=True) (or, if this process dies first, by reap_dead_hubs).
            return
        if not self._hub.holds(squad):  # no newer connection of the squad here
            # Its last fix may wait for the next flush (position_flush_ms): written after the
            # disconnect, it would put an offline squad back on the map for good.
            self._positions.forget(unit, squad)
        member = hub_member(unit, squad, session.conn_id)
        try:
            await self._squads.disconnect(
                unit, squad, session.conn_id, self._timers_at(), member=(self._hub_id, member)
            )
        except Exception as exc:  # noqa: BLE001 - Redis down: reconcile() catches up
            if is_outage(exc):
                self._availability.failed("squad offline", exc)
            else:
                log.exception("could not record %s offline; reconcile() will", squad)

    async def step_aside(self, sessions: Sequence[Connection]) -> int:
        """Before the drain closes ``sessions`` (1012: reconnect elsewhere), take their squads
        out of dispatch candidacy (``step_aside.lua``, atomic per unit), so no new offer goes
        to a phone about to be closed; offers already made stay in their outboxes and are
        replayed on resume. The squads stay online and on duty: their hello on another process
        (``connect.lua``) makes them candidates again. Returns how many stepped aside."""
        members = [(s.unit, s.squad) for s in sessions if s.squad]
        return await self._squads.step_aside(self._hub_id, members)

    async def reconcile(self, *, everyone: bool = False) -> int:
        """Squads Redis believes are connected here but are not (a disconnect that could not
        be recorded, e.g. during a Redis restart): take them offline now. ``everyone``: all of
        this process's squads (it is shutting down)."""
        if self.handing_over and not everyone:
            # Draining: the phones this process closed are between hubs, not gone; taking
            # them offline now would start their offline timers and take them off the map.
            # The shutdown's reconcile(everyone=True) records whoever did not come back.
            return 0
        members = [text(m) for m in await self._redis.smembers(keys.hub_squads(self._hub_id))]
        if not everyone:
            members = [m for m in members if not self._holds(m)]
        stale = 0
        for start in range(0, len(members), RECONCILE_CONCURRENCY):
            part = members[start : start + RECONCILE_CONCURRENCY]
            stale += sum(await asyncio.gather(*(self._take_offline(self._hub_id, m) for m in part)))
        return stale

    def _holds(self, member: str) -> bool:
        """Whether the connection of a member of this process's set is open here: registered,
        or with its hello under way (its member is written before the squad is marked online,
        and the session registered after: it must not be taken offline in between)."""
        _, squad, conn = parse_hub_member(member)
        hub = self._hub
        session = hub.sessions.get(squad)
        if session is not None and (not conn or getattr(session, "conn_id", "") == conn):
            return True
        return any(getattr(s, "conn_id", "") == conn for s in hub.joining.get(squad, ()))

    async def _take_offline(self, hub_id: str, member: str) -> bool:
        """Record the squad of a member of ``hub_id``'s set offline, unless it is connected
        elsewhere now (or, for a member naming its connection, through another connection),
        and drop the member; True if it went offline."""
        unit, squad, conn = parse_hub_member(member)
        return await self._squads.disconnect(
            unit,
            squad,
            conn or hub_id,
            self._timers_at(),
            by_hub=not conn,
            member=(hub_id, member),
        )

    # ---- offline timers --------------------------------------------------------------------

    async def on_timer(self, unit: str, kind: TimerKind, squad: str) -> bool:
        """Carry out a presence timer; True if capacity may have come free."""
        freed = False
        if not await self._squads.is_online(unit, squad):
            if kind is TimerKind.OFFLINE:
                freed = await self._pass_on_offers(unit, squad)
            elif kind is TimerKind.ALERT:
                await self._tell_center(unit, squad)
        await self._redis.zrem(keys.timers(unit), timers.entry(kind, squad))
        return freed

    async def _pass_on_offers(self, unit: str, squad: str) -> bool:
        passed = False
        for job in await self._squads.active_jobs(unit, squad):
            if job["state"] == "offered":
                passed |= await self._dispatcher.expire_offer(unit, job["id"], "squad_offline")
        return passed

    async def _tell_center(self, unit: str, squad: str) -> None:
        for job in await self._squads.active_jobs(unit, squad):
            if job["state"] != "offered":
                event = event_json(
                    "squad_offline",
                    job["request"],
                    time.time(),
                    PRESENCE,
                    squad=squad,
                    assignment=job["id"],
                )
                await self._requests.note(unit, job["request"], event)

    # ---- hub processes ---------------------------------------------------------------------

    async def beat(self) -> None:
        await self._redis.zadd(keys.hubs(), {self._hub_id: time.time()})

    async def leave(self) -> None:
        await self._redis.zrem(keys.hubs(), self._hub_id)

    async def reap_dead_hubs(self) -> int:
        """Take the squads of dead hub processes offline; returns how many went offline."""
        limit = time.time() - self._settings.hub_dead_after_s
        dead = await self._redis.zrangebyscore(keys.hubs(), "-inf", limit)
        offline = 0
        for raw in dead:
            hub = text(raw)
            if hub == self._hub_id or not await self._redis.zrem(keys.hubs(), hub):
                continue  # ourselves (a stall, not a death), or another process took it
            log.warning("hub %s stopped beating: taking its squads offline", hub)
            for member in await self._redis.smembers(keys.hub_squads(hub)):
                offline += await self._take_offline(hub, text(member))
            await self._redis.delete(keys.hub_squads(hub))
        return offline
