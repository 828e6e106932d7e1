"""Presence: what happens when a squad goes offline, and when a hub process dies.

A squad is online while it has a live socket on a live hub (and keeps talking: a session
silent beyond ``offline_after_s`` is closed by its hub). When it goes offline:

* at once it leaves the available set (no new offers; ``disconnect.lua``);
* after ``offline_after_s`` still offline, its unanswered offers are revoked and passed on;
* after ``offline_alert_s`` still offline while holding accepted work, the center is told
  (a ``squad_offline`` event on each request it holds).

Both are timers in the unit's Redis timer set, so any living hub process carries them out.

Each hub process records a heartbeat; one that stops beating for ``hub_dead_after_s`` is dead
(``kill -9``, machine lost): a living process claims it (one ZREM wins), and marks its squads
offline, unless they already reconnected elsewhere.
"""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis

from server.assign.dispatcher import Dispatcher
from server.settings import Settings
from server.store import keys, timers
from server.store.requests import Actor, RequestStore, event_json
from server.store.squads import SquadStore
from server.store.text import text
from server.store.timers import TimerKind

log = logging.getLogger(__name__)
PRESENCE = Actor("system", "presence")


class PresenceTracker:
    def __init__(
        self,
        redis: Redis,
        squads: SquadStore,
        requests: RequestStore,
        dispatcher: Dispatcher,
        settings: Settings,
        hub_id: str,
    ) -> None:
        self._redis = redis
        self._squads = squads
        self._requests = requests
        self._dispatcher = dispatcher
        self._settings = settings
        self._hub_id = hub_id

    async def went_offline(self, unit: str, squad: str) -> None:
        now_ms = time.time() * 1000
        s = self._settings
        await self._redis.zadd(
            keys.timers(unit),
            {
                timers.entry(TimerKind.OFFLINE, squad): now_ms + s.offline_after_s * 1000,
                timers.entry(TimerKind.ALERT, squad): now_ms + s.offline_alert_s * 1000,
            },
        )

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
                unit, _, squad = text(member).partition("/")
                if await self._squads.disconnect(unit, squad, hub, by_hub=True):
                    await self.went_offline(unit, squad)
                    offline += 1
            await self._redis.delete(keys.hub_squads(hub))
        return offline
