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
from typing import Any

from redis.asyncio import Redis

from dispatch_field import protocol
from server.assign.ranking import NEAR_TIE, parse_candidates, rank
from server.background import Background
from server.known import KnownRequests
from server.lifecycle import (
    InvalidTransition,
    Offered,
    OfferExpired,
    RequestView,
    State,
    Step,
    transition,
)
from server.metrics import Metrics
from server.settings import Settings
from server.store import keys, timers
from server.store.availability import is_outage
from server.store.requests import (
    Actor,
    Commit,
    KeptChanging,
    RequestRecord,
    RequestStore,
    compare_and_set,
    event_json,
    request_info,
)
from server.store.scripts import ScriptCall, Scripts
from server.store.text import text

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


_ANY = "\0"  # offer_nearest.lua puts a squad's id in place of this in its keys


@dataclass(frozen=True, slots=True)
class _Offer:
    """An offer about to be claimed: its name, the lifecycle's step, its frame."""

    assignment: str
    step: Step
    now: float
    respond_by: float
    body: bytes

    def claim_keys(self, unit: str, request_id: str) -> list[str]:
        """KEYS[1..10] of claim.lua and offer_nearest.lua."""
        return [
            keys.request(unit, request_id),
            keys.queue(unit),
            keys.available(unit),
            keys.free(unit),
            keys.tried(unit, request_id),
            keys.timers(unit),
            keys.events(unit),
            keys.timeline(unit, request_id),
            keys.assignment(unit, self.assignment),
            keys.stats(unit),
        ]

    def claim_args(self, request_id: str, settings: Settings) -> list[Any]:
        """ARGV[1..11] of claim.lua and offer_nearest.lua."""
        return [
            request_id,
            self.assignment,
            int(self.now * 1000),
            int(self.respond_by * 1000),
            self.body,
            settings.events_maxlen,
            settings.outbox_max_frames,
            State.QUEUED.value,
            self.step.state.value,
            self.step.event,
            timers.entry(timers.TimerKind.OFFER, self.assignment),
        ]


@dataclass(frozen=True, slots=True)
class FirstOffer:
    """A new request's offer, prepared to be sent with its create (see
    :meth:`Dispatcher.first_offer`)."""

    unit: str
    request_id: str
    record: RequestRecord
    offer: _Offer
    call: ScriptCall


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
        background: Background | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """``known``: where an offer's record is left for the squad's first command (which
        then needs no read). ``background``: where :meth:`drain_soon` runs its drains."""
        self._background = background or Background()
        self._metrics = metrics or Metrics()
        self._known = known
        self._redis = redis
        self._scripts = scripts
        self._requests = requests
        self._settings = settings
        self._push = push
        self._draining: dict[str, asyncio.Lock] = {}
        self._drain_again: set[str] = set()
        self._drain_pending: set[str] = set()  # units whose drain is started but not yet running
        self._drain_later: dict[str, bool] = {}  # units with a delayed drain asleep: called again

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
        return await self._claim(unit, request_id, record, ranked, bool(found))

    async def _claim(
        self,
        unit: str,
        request_id: str,
        record: RequestRecord,
        ranked: list[str],
        found: bool,
    ) -> DispatchResult | None:
        """Claim the first of ``ranked`` still eligible. None: all were taken meanwhile."""
        offer = self._new_offer(record)
        claim_keys = offer.claim_keys(unit, request_id)
        for candidate in ranked:
            claim_keys += [
                keys.squad(unit, candidate),
                keys.outbox(unit, candidate),
                keys.jobs(unit, candidate),
            ]
        result = await self._scripts.claim(
            keys=claim_keys, args=[*offer.claim_args(request_id, self._settings), *ranked]
        )
        status = text(result[0])
        if status == "none":  # all taken meanwhile; or the preferred squad alone was not free
            return None if found else DispatchResult(Outcome.WAITING)
        return await self._claimed(unit, record, offer, result)

    def first_offer(self, unit: str, request_id: str, record: RequestRecord) -> FirstOffer:
        """The offer of a request being created, as one script call (``offer_nearest.lua``)
        that the caller sends in the same round trip as the create, after it; its answer
        goes to :meth:`finish_first_offer`. ``record``: the request as the create leaves it
        (queued)."""
        s = self._settings
        offer = self._new_offer(record)
        skill = ANY_SKILL if record.assist_of else record.category
        call = ScriptCall(
            self._scripts.offer_nearest,
            [
                *offer.claim_keys(unit, request_id),
                keys.geo(unit),
                keys.skills(unit),
                keys.fix_times(unit),
            ],
            [
                *offer.claim_args(request_id, s),
                record.lon,
                record.lat,
                s.search_first_radius_km,
                s.search_count,
                skill,
                time.time() - s.position_max_age_s,
                s.rank_count,
                s.search_radius_km,
                NEAR_TIE,
                keys.squad(unit, _ANY),
                keys.outbox(unit, _ANY),
                keys.jobs(unit, _ANY),
            ],
        )
        return FirstOffer(unit, request_id, record, offer, call)

    async def finish_first_offer(self, first: FirstOffer, result: list[Any]) -> DispatchResult:
        """Carry on from ``offer_nearest.lua``'s answer: push the offer it made, or rank a
        near-tie and claim, or leave the request waiting."""
        status = text(result[0])
        if status == "stale":
            return DispatchResult(Outcome.NOT_QUEUED)
        if status == "none":
            return DispatchResult(Outcome.WAITING)
        if status == "tie":  # the geodesic decides: rank and claim (a second round trip)
            record = first.record
            found = parse_candidates(result[1:])
            ranked = [c.squad for c in rank(record.lat, record.lon, found)]
            claimed = await self._claim(first.unit, first.request_id, record, ranked, True)
            if claimed is not None:
                return claimed
            return await self.dispatch(first.unit, first.request_id, record)
        return await self._claimed(first.unit, first.record, first.offer, result)

    async def _claimed(
        self, unit: str, record: RequestRecord, offer: _Offer, result: list[Any]
    ) -> DispatchResult:
        """After a claim's answer other than 'none': push the offer it made."""
        if text(result[0]) == "stale":
            return DispatchResult(Outcome.NOT_QUEUED)
        squad, seq, hub = text(result[1]), int(result[2]), text(result[3])
        assignment = offer.assignment
        if self._known is not None and int(result[4]) == record.v + 1:
            # Nobody else changed the request since ``record``: it is the offer's record.
            offered = {
                "state": offer.step.state.value,
                "squad": squad,
                "assignment": assignment,
                "offered_at": str(int(offer.now * 1000)),
                "v": str(record.v + 1),
            }
            self._known.remember(unit, squad, assignment, record.with_fields(offered))
        await self._push(unit, squad, seq, offer.body, hub)
        return DispatchResult(Outcome.OFFERED, squad, assignment)

    def _new_offer(self, record: RequestRecord) -> _Offer:
        assignment = f"A{secrets.token_hex(6)}"
        # The lifecycle decides the move (from queued, to offered, under which name); the
        # claim re-checks the state atomically, carries the move out and picks the squad.
        step = transition(RequestView(State.QUEUED), Offered(squad="", assignment=assignment))
        now = time.time()
        respond_by = now + self._settings.offer_window_s
        body = self._offer_body(record, assignment, respond_by)
        return _Offer(assignment, step, now, respond_by, body)

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

    def drain_soon(self, unit: str, after_s: float = 0.0) -> None:
        """Move the unit's queue in the background (a squad became available), now or once
        ``after_s`` has passed (a first position must reach Redis first).

        Calls are folded: while a drain of the unit is started but has not yet read the
        queue, another call adds nothing (that drain sees what the call was for); while a
        delayed drain sleeps, another delayed call makes it run once more, ``after_s`` after
        its run. A reconnect storm is 10,000 calls over a dozen units."""
        if after_s:
            if unit in self._drain_later:
                self._drain_later[unit] = True
                return
            self._drain_later[unit] = False
            self._background.spawn(self._drain_after(unit, after_s))
        elif unit not in self._drain_pending:
            self._drain_pending.add(unit)
            self._background.spawn(self._drain_now(unit))

    async def _drain_now(self, unit: str) -> None:
        self._drain_pending.discard(unit)
        await self._drain_unless_away(unit)

    async def _drain_unless_away(self, unit: str) -> None:
        """A drain in the background. With Redis away it gives up quietly: the queue sweep
        (``server.loops``) moves every unit's queue once Redis is back, and the outage itself
        is logged where it is first noticed (``RedisAvailability``)."""
        try:
            await self.drain(unit)
        except Exception as exc:
            if not is_outage(exc):
                raise
            log.debug("drain of %s skipped: Redis unreachable (%s)", unit, exc)

    async def _drain_after(self, unit: str, after_s: float) -> None:
        try:
            again = True
            while again:
                await asyncio.sleep(after_s)
                called_asleep, self._drain_later[unit] = self._drain_later[unit], False
                await self._drain_unless_away(unit)
                # Called while it slept or drained: that fix may reach Redis after this drain.
                again = called_asleep or self._drain_later[unit]
        finally:
            self._drain_later.pop(unit, None)

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

        async def attempt() -> Commit | None:
            record = await self._requests.read(unit, request_id)
            if record is None:
                return None
            try:
                step = transition(record.view(), OfferExpired(assignment, reason))
            except InvalidTransition:
                await self._redis.zrem(keys.timers(unit), timer)
                return None
            event = event_json(
                step.event,
                request_id,
                time.time(),
                SYSTEM,
                squad=squad,
                assignment=assignment,
                reason=reason,
            )
            return await self._requests.commit(  # StaleRequest: moved on, attempt again
                unit,
                request_id,
                record.v,
                step,
                [event],
                assignment=assignment,
                squad=squad,
                queue_score=record.received_at,
            )

        try:
            commit = await compare_and_set(attempt, 5)
        except KeptChanging:
            log.warning(
                "offer %s of request %s kept changing; the timer will retry", assignment, request_id
            )
            return False
        if commit is None:
            return False
        if self._known is not None:
            self._known.forget(unit, squad, assignment)
        if commit.revoke_seq:
            await self._push(unit, squad, commit.revoke_seq, commit.revoke_body, commit.hub)
        self._metrics.offers_passed_on.labels(reason).inc()
        await self.dispatch(unit, request_id)
        return True
