"""Supervision notices (督办通知单): issued when a deadline timer fires with its milestone
unmet, escalated while the item stays open, read by the center and the unit desks.

The rules are pure (:mod:`server.deadlines`); this module carries them out. A notice is
issued by ``notice.lua``, which creates it only if absent: a timer fired twice (two processes,
or a process that died after issuing and before removing the timer) issues one notice per
request, kind and level. Notices close in the commit of the step that meets them
(``apply.lua``), not here.

A request a ruling moved to another unit keeps its old timers in the old unit's set: the
handler finds the request where it is now (``RequestStore.unit_of``) and issues there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import msgspec
from redis.asyncio import Redis

from dispatch_field import protocol
from server import deadlines
from server.assign.dispatcher import Push
from server.deadlines import Due, NoticeKind
from server.lifecycle import HELD
from server.metrics import Metrics
from server.settings import Settings
from server.store import keys, timers
from server.store.requests import (
    Actor,
    KeptChanging,
    RequestRecord,
    RequestStore,
    StaleRequest,
    compare_and_set,
    event_json,
)
from server.store.scripts import Scripts
from server.store.text import text
from server.store.timers import TimerKind

log = logging.getLogger(__name__)
SUPERVISION = Actor("system", "supervision")
CAS_ATTEMPTS = 5


class NoticeRecord(msgspec.Struct, kw_only=True):
    """A notice as kept in the request's notices hash (and answered by the API)."""

    id: str
    request: str
    unit: str
    kind: str
    level: int
    issued_at: float
    due_at: float
    squad: str = ""
    state: str = "open"  # or "closed"
    closed_at: float | None = None
    closed_by: str = ""  # the event that met it: accepted, arrived, resolved, cancelled, ...

    def info(self) -> protocol.NoticeInfo:
        return protocol.NoticeInfo(
            id=self.id,
            request=self.request,
            unit=self.unit,
            squad=self.squad,
            kind=self.kind,  # type: ignore[arg-type]
            level=self.level,
            issued_at=self.issued_at,
            due_at=self.due_at,
        )


_decode_notice = msgspec.json.Decoder(NoticeRecord)
_encoder = msgspec.json.Encoder()


class Notices:
    """Fires deadline and escalation timers; reads notices for the API."""

    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        requests: RequestStore,
        settings: Settings,
        push: Push,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._redis = redis
        self._scripts = scripts
        self._requests = requests
        self._settings = settings
        self._push = push

    @property
    def escalate_s(self) -> float:
        return self._settings.notice_escalate_s * self._settings.time_scale

    # ---- timers ------------------------------------------------------------------------

    async def on_timers(self, timer_unit: str, fired: list[tuple[TimerKind, str]]) -> None:
        """Carry out a batch of claimed timers concurrently: each waits on a few Redis round
        trips, and one after the other they would cap firing at a few hundred per second.
        A failure is logged; its timer's lease runs out and any process fires it again."""
        results = await asyncio.gather(
            *(self.on_timer(timer_unit, kind, ident) for kind, ident in fired),
            return_exceptions=True,
        )
        for (kind, ident), result in zip(fired, results, strict=True):
            if isinstance(result, BaseException):
                log.error(
                    "timer %s:%s failed; it will fire again", kind.value, ident, exc_info=result
                )

    async def on_timer(self, timer_unit: str, kind: TimerKind, ident: str) -> None:
        """Carry out a ``deadline`` or ``escalate`` timer of ``timer_unit``'s set. Idempotent:
        a timer fired again finds its notice issued, or its milestone met."""
        member = timers.entry(kind, ident)
        deadline = deadlines.parse_deadline(ident) if kind is TimerKind.DEADLINE else None
        escalation = deadlines.parse_escalation(ident) if kind is TimerKind.ESCALATE else None
        unit = None
        if deadline is not None:
            unit = await self._deadline_passed(*deadline)
        elif escalation is not None:
            await self._escalate(*escalation)
        if deadline is None or unit is None:
            await self._redis.zrem(keys.timers(timer_unit), member)
            return
        # Removed, then read again in the same round trip: if a step moved the deadline
        # later between our read and the removal (a new promise), schedule it again; a step
        # committed after the removal schedules it itself.
        request_id, milestone = deadline
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrem(keys.timers(timer_unit), member)
        pipe.hgetall(keys.request(unit, request_id))
        _, raw = await pipe.execute()
        if not raw:
            return
        decision = deadlines.notice_due(
            RequestRecord.from_hash(raw).progress(), milestone, time.time()
        )
        if decision.due is Due.LATER and decision.at is not None:
            member = deadlines.deadline_entry(request_id, milestone)
            await self._redis.zadd(keys.timers(unit), {member: int(decision.at * 1000)})

    async def _deadline_passed(self, request_id: str, milestone: deadlines.Milestone) -> str | None:
        """Issue the notice a passed deadline calls for; returns the request's unit (None:
        the request is gone)."""
        seen: str | None = None

        async def attempt() -> str | None:
            nonlocal seen
            found = await self._current(request_id)
            if found is None:
                return None
            seen, record = found
            decision = deadlines.notice_due(record.progress(), milestone, time.time())
            if decision.due is Due.ISSUE:
                assert decision.kind is not None and decision.at is not None
                await self._issue(seen, record, decision.kind, 1, decision.at)
            return seen

        try:
            return await compare_and_set(attempt, CAS_ATTEMPTS)
        except KeptChanging:
            log.warning(
                "request %s kept changing; its %s deadline will fire again",
                request_id,
                milestone.value,
            )
            return seen

    async def _escalate(self, request_id: str, kind: NoticeKind, level: int) -> None:
        async def attempt() -> None:
            found = await self._current(request_id)
            if found is None:
                return
            unit, record = found
            if deadlines.kind_is_met(record.progress(), kind):
                return
            previous = await self._notice(
                unit, request_id, deadlines.notice_id(request_id, kind, level - 1)
            )
            if previous is None or previous.state != "open":
                return
            await self._issue(unit, record, kind, level, previous.due_at)

        try:
            await compare_and_set(attempt, CAS_ATTEMPTS)
        except KeptChanging:
            log.warning(
                "request %s kept changing; its level %d %s notice was not issued",
                request_id,
                level,
                kind.value,
            )

    async def issue_recheck(self, request_id: str) -> str | None:
        """Issue the ``recheck`` notice of a request a spot check found not fixed, just
        reopened by the center: level 1, due at its new resolution deadline, to the unit and
        the squad holding it (if one does yet). It does not escalate: the new resolution
        deadline's own notices chase the item. Idempotent. Returns the notice id; None if
        the request is not in the live state."""

        async def attempt() -> str | None:
            found = await self._current(request_id)
            if found is None:
                return None
            unit, record = found
            due = record.resolve_by if record.resolve_by is not None else time.time()
            await self._issue(unit, record, NoticeKind.RECHECK, 1, due, escalate=False)
            return deadlines.notice_id(request_id, NoticeKind.RECHECK, 1)

        try:
            return await compare_and_set(attempt, CAS_ATTEMPTS)
        except KeptChanging:
            log.warning("request %s kept changing; its recheck notice was not issued", request_id)
            return None

    async def _issue(
        self,
        unit: str,
        record: RequestRecord,
        kind: NoticeKind,
        level: int,
        due_at: float,
        escalate: bool = True,
    ) -> None:
        """Issue the notice of ``level`` unless it exists (and schedule the next level's,
        with ``escalate``, below the top level). Raises StaleRequest when the request
        changed since it was read (read again)."""
        now = time.time()
        held = record.squad if record.state in HELD else ""
        notice = NoticeRecord(
            id=deadlines.notice_id(record.id, kind, level),
            request=record.id,
            unit=unit,
            squad=held,
            kind=kind.value,
            level=level,
            issued_at=round(now, 3),
            due_at=round(due_at, 3),
        )
        escalation, escalate_at = "", 0
        if escalate and level < self._settings.notice_max_level:
            escalation = deadlines.escalation_entry(record.id, kind, level + 1)
            escalate_at = int(deadlines.escalation_at(due_at, level, self.escalate_s) * 1000)
        body = protocol.encode(protocol.Notice(notice=notice.info())) if held else b""
        event = event_json(
            "notice_issued",
            record.id,
            now,
            SUPERVISION,
            notice=notice.id,
            notice_kind=kind.value,  # ("kind" names the event type in event_json)
            level=level,
            squad=held,
            due_at=notice.due_at,
        )
        result = await self._scripts.notice(
            keys=[
                keys.request(unit, record.id),
                keys.notices(unit, record.id),
                keys.request_open_notices(unit, record.id),
                keys.open_notices(unit),
                keys.timeline(unit, record.id),
                keys.events(unit),
                keys.timers(unit),
                keys.squad(unit, held or "-"),
                keys.outbox(unit, held or "-"),
            ],
            args=[
                record.v,
                notice.id,
                _encoder.encode(notice),
                event,
                self._settings.events_maxlen,
                int(now * 1000),
                escalation,
                escalate_at,
                body,
                self._settings.outbox_max_frames,
            ],
        )
        outcome = text(result[0])
        if outcome == "stale":
            raise StaleRequest(record.id)
        if outcome == "issued":
            seq, hub = int(result[1]), text(result[2])
            log.info("notice %s issued", notice.id)
            self._metrics.notices_issued.labels(kind.value, str(level)).inc()
            if seq:
                await self._push(unit, held, seq, body, hub)

    async def _current(self, request_id: str) -> tuple[str, RequestRecord] | None:
        unit = await self._requests.unit_of(request_id)
        if unit is None or unit == keys.NO_UNIT:
            return None
        record = await self._requests.read(unit, request_id)
        return None if record is None else (unit, record)

    # ---- reads -------------------------------------------------------------------------

    async def _notice(self, unit: str, request_id: str, notice_id: str) -> NoticeRecord | None:
        raw = await self._redis.hget(keys.notices(unit, request_id), notice_id)
        return None if raw is None else decode_notice(raw)

    async def of_request(self, unit: str, request_id: str) -> list[NoticeRecord]:
        """Every notice of the request (open and closed), oldest first."""
        raw = await self._redis.hvals(keys.notices(unit, request_id))
        return sorted((decode_notice(r) for r in raw), key=lambda n: (n.issued_at, n.id))

    async def open_by_request(
        self, unit: str, request_ids: Iterable[str]
    ) -> dict[str, list[NoticeRecord]]:
        """Open notices of each of ``request_ids`` (one pipeline)."""
        ids = list(request_ids)
        pipe = self._redis.pipeline(transaction=False)
        for request_id in ids:
            pipe.smembers(keys.request_open_notices(unit, request_id))
        open_ids = await pipe.execute()
        wanted = [
            (rid, text(n)) for rid, members in zip(ids, open_ids, strict=True) for n in members
        ]
        notices = await self._many(unit, wanted)
        result: dict[str, list[NoticeRecord]] = {}
        for notice in notices:
            result.setdefault(notice.request, []).append(notice)
        for listed in result.values():
            listed.sort(key=lambda n: (n.issued_at, n.id))
        return result

    async def of_unit(self, unit: str, state: str | None, limit: int) -> list[NoticeRecord]:
        """The unit's newest notices (by issue time for open ones, closing time for closed),
        ``state`` "open", "closed" or None (both)."""
        indexes = {"open": keys.open_notices(unit), "closed": keys.closed_notices(unit)}
        chosen = [indexes[state]] if state else list(indexes.values())
        wanted: list[tuple[str, str]] = []
        for index in chosen:
            for raw in await self._redis.zrevrange(index, 0, limit - 1):
                parsed = deadlines.parse_notice_id(text(raw))
                if parsed is not None:
                    wanted.append((parsed[0], text(raw)))
        notices = await self._many(unit, wanted)
        notices.sort(key=lambda n: (n.closed_at or n.issued_at, n.id), reverse=True)
        return notices[:limit]

    async def _many(self, unit: str, wanted: list[tuple[str, str]]) -> list[NoticeRecord]:
        if not wanted:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for request_id, notice_id in wanted:
            pipe.hget(keys.notices(unit, request_id), notice_id)
        return [decode_notice(raw) for raw in await pipe.execute() if raw is not None]


def decode_notice(raw: Any) -> NoticeRecord:
    """A stored notice (written by notice.lua, closed by apply.lua's cjson)."""
    return _decode_notice.decode(raw if isinstance(raw, bytes) else str(raw).encode())
