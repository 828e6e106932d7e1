"""Dispatch: offer a queued request to the nearest suitable squad, expire unanswered offers,
and move a unit's queue when a squad becomes available.

Every step is safe to run from any number of processes at once: the claim is one atomic Lua
script that re-checks the request's state and the squad's capacity, and lifecycle steps are
compare-and-set on the request's version. A process that dies between two steps leaves the
request queued (found by the next queue sweep) or offered with a timer in Redis (claimed by
another process when due).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis

from dispatch_field import protocol
from server import keys, timers
from server.assign.ranking import parse_candidates, rank
from server.known import KnownRequests
from server.lifecycle import (
    InvalidTransition,
    Offered,
    OfferExpired,
    RequestView,
    State,
    transition,
)
from server.redis_text import text
from server.requests import (
    Actor,
    RequestRecord,
    RequestStore,
    StaleRequest,
    event_json,
    request_info,
)
from server.scripts import Scripts
from server.settings import Settings

log = logging.getLogger(__name__)

# push(unit, squad, seq, body, hub): deliver a numbered frame that is already in the outbox.
Push = Callable[[str, str, int, bytes, str], Awaitable[None]]

SYSTEM = Actor("system")
ANY_SKILL = "*"  # candidates.lua: every squad of the unit, whatever its skills


class Outcome(StrEnum):
    OFFERED = "offered"
    WAITING = "waiting"  # no suitable squad now: stays in the unit's queue
    NOT_QUEUED = "not_queued"  # someone else moved it (offered elsewhere, resolved, ...)


@dataclass(frozen=True, slots=True)
class DispatchResult:
    outcome: Outcome
    squad: str = ""
    assignment: str = ""


class Dispatcher:
    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        requests: RequestStore,
        settings: Settings,
        push: Push,
        *,
        known: KnownRequests | None = None,
    ) -> None:
        """``known``: where an offer's record is left for the squad's first command (which
        then needs no read)."""
        self._known = known
        self._redis = redis
        self._scripts = scripts
        self._requests = requests
        self._settings = settings
        self._push = push
        self._draining: dict[str, asyncio.Lock] = {}
        self._drain_again: set[str] = set()

    async def dispatch(
        self, unit: str, request_id: str, record: RequestRecord | None = None, prefer: str = ""
    ) -> DispatchResult:
        """Offer the request to the nearest suitable squad, if it is queued and one exists.

        ``record``: the request as the caller just wrote it (saves reading it back); the claim
        re-checks its state atomically either way. ``prefer``: a squad offered first if it is
        available with free capacity, wherever it is (the center upheld its unit's duty after
        it disputed the request); otherwise the nearest as usual."""
        if record is None:
            record = await self._requests.read(unit, request_id)
        if record is None or record.state is not State.QUEUED:
            return DispatchResult(Outcome.NOT_QUEUED)
        if prefer:  # the claim passes over squads already tried: this one must not be
            await self._redis.srem(keys.tried(unit, request_id), prefer)
        # In a burst, concurrent dispatches may take every candidate this one found between
        # its search and its claim: search again rather than wait for the queue sweep.
        for _ in range(self.CLAIM_ATTEMPTS):
            result = await self._try_offer(unit, request_id, record, prefer)
            if result is not None:
                return result
        return DispatchResult(Outcome.WAITING)

    # Each lost claim means another request won a squad, so retrying cannot livelock; the
    # bound only caps the work one request does in an extreme burst.
    CLAIM_ATTEMPTS = 16

    async def _try_offer(
        self, unit: str, request_id: str, record: RequestRecord, prefer: str = ""
    ) -> DispatchResult | None:
        """One search and claim. None: the candidates found were all taken meanwhile."""
        lat, lon = record.lat, record.lon
        # An assist item goes to any squad of the assisting unit: its squads' skills are
        # that unit's categories, not the category of the request it assists.
        skill = ANY_SKILL if record.assist_of else record.category
        found = await self.candidates(unit, skill, lat, lon)
        if not found and not prefer:
            return DispatchResult(Outcome.WAITING)
        ranked = [c.squad for c in rank(lat, lon, found)]
        if prefer:  # first; the claim checks it is available with free capacity
            ranked = [prefer, *(squad for squad in ranked if squad != prefer)]
        assignment = f"A{secrets.token_hex(6)}"
        # The lifecycle decides the move (from queued, to offered, under which name); the
        # claim re-checks the state atomically, carries the move out and picks the squad.
        step = transition(RequestView(State.QUEUED), Offered(squad="", assignment=assignment))
        now = time.time()
        respond_by = now + self._settings.offer_window_s
        body = self._offer_body(record, assignment, respond_by)
        claim_keys = [
            keys.request(unit, request_id),
            keys.queue(unit),
            keys.available(unit),
            keys.free(unit),
            keys.tried(unit, request_id),
            keys.timers(unit),
            keys.events(unit),
            keys.timeline(unit, request_id),
            keys.assignment(unit, assignment),
            keys.stats(unit),
        ]
        for candidate in ranked:
            claim_keys += [
                keys.squad(unit, candidate),
                keys.outbox(unit, candidate),
                keys.jobs(unit, candidate),
            ]
        result = await self._scripts.claim(
            keys=claim_keys,
            args=[
                request_id,
                assignment,
                int(now * 1000),
                int(respond_by * 1000),
                body,
                self._settings.events_maxlen,
                self._settings.outbox_max_frames,
                State.QUEUED.value,
                step.state.value,
                step.event,
                timers.entry(timers.TimerKind.OFFER, assignment),
                *ranked,
            ],
        )
        status = text(result[0])
        if status == "stale":
            return DispatchResult(Outcome.NOT_QUEUED)
        if status == "none":  # all taken meanwhile; or the preferred squad alone was not free
            return None if found else DispatchResult(Outcome.WAITING)
        squad, seq, hub = text(result[1]), int(result[2]), text(result[3])
        if self._known is not None and int(result[4]) == record.v + 1:
            # Nobody else changed the request since ``record``: it is the offer's record.
            offered = {"state": step.state.value, "squad": squad, "assignment": assignment,
                       "offered_at": str(int(now * 1000)), "v": str(record.v + 1)}
            self._known.remember(unit, squad, assignment,
                                 RequestRecord.from_hash(record.as_fields() | offered))
        await self._push(unit, squad, seq, body, hub)
        return DispatchResult(Outcome.OFFERED, squad, assignment)

    @staticmethod
    def _offer_body(record: RequestRecord, assignment: str, respond_by: float) -> bytes:
        return protocol.encode(
            protocol.Offer(
                assignment=assignment,
                request=request_info(record),
                respond_by=round(respond_by, 3),
            )
        )

    async def candidates(
        self, unit: str, category: str, lat: float, lon: float
    ) -> list[tuple[str, float, float]]:
        """Squads of ``unit`` that could take a ``category`` request at (lat, lon) now, as
        (id, lat, lon), nearest first by Redis's GEO distance (``rank`` orders them finally)."""
        s = self._settings
        flat = await self._scripts.candidates(
            keys=[
                keys.geo(unit),
                keys.available(unit),
                keys.free(unit),
                keys.skills(unit),
                keys.fix_times(unit),
            ],
            args=[
                lon,
                lat,
                s.search_first_radius_km,
                s.search_count,
                category,
                time.time() - s.position_max_age_s,
                s.rank_count,
                s.search_radius_km,
            ],
        )
        return parse_candidates(flat)

    async def drain(self, unit: str, limit: int = 200) -> int:
        """Try the unit's waiting requests, oldest first; returns how many were offered.

        Calls that arrive while a drain of the same unit runs are folded into one more pass.
        """
        lock = self._draining.setdefault(unit, asyncio.Lock())
        if lock.locked():
            self._drain_again.add(unit)
            return 0
        offered = 0
        async with lock:
            while True:
                self._drain_again.discard(unit)
                waiting = await self._redis.zrange(keys.queue(unit), 0, limit - 1)
                for raw in waiting:
                    result = await self.dispatch(unit, text(raw))
                    offered += result.outcome is Outcome.OFFERED
                if unit not in self._drain_again:
                    return offered

    async def expire_offer(
        self, unit: str, assignment: str, reason: str = "offer_window_passed"
    ) -> bool:
        """The offer window of ``assignment`` passed: revoke it, count a non-response against
        the unit, offer the request to the next squad. Idempotent: an offer that was accepted
        or already expired is left alone. Returns True if it expired the offer now."""
        raw = await self._redis.hgetall(keys.assignment(unit, assignment))
        info = {text(k): text(v) for k, v in raw.items()}
        request_id, squad = info.get("request", ""), info.get("squad", "")
        timer = timers.entry(timers.TimerKind.OFFER, assignment)
        if info.get("state") != State.OFFERED:
            await self._redis.zrem(keys.timers(unit), timer)
            return False
        for _ in range(5):  # CAS retries against concurrent steps on the same request
            record = await self._requests.read(unit, request_id)
            if record is None:
                return False
            view, version = record.view(), record.v
            try:
                step = transition(view, OfferExpired(assignment, reason))
            except InvalidTransition:
                await self._redis.zrem(keys.timers(unit), timer)
                return False
            event = event_json(
                step.event,
                request_id,
                time.time(),
                SYSTEM,
                squad=squad,
                assignment=assignment,
                reason=reason,
            )
            try:
                commit = await self._requests.commit(
                    unit,
                    request_id,
                    version,
                    step,
                    [event],
                    assignment=assignment,
                    squad=squad,
                    queue_score=record.received_at,
                )
            except StaleRequest:
                continue
            if commit.revoke_seq:
                await self._push(unit, squad, commit.revoke_seq, commit.revoke_body, commit.hub)
            await self.dispatch(unit, request_id)
            return True
        log.warning(
            "offer %s of request %s kept changing; the timer will retry", assignment, request_id
        )
        return False
