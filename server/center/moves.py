"""Moving a request to the unit a ruling gave it jurisdiction.

Every key of a request lives in its unit's Cluster slot, so a move is several writes, in
this order (each one idempotent, so a retry after a crash anywhere completes the move):

1. the old unit commits the ``reassigned`` step (compare-and-set on the version, with
   ``apply.lua``): the request leaves the old unit's queue and open requests, and the old
   hash's ``unit`` field names the new unit. From here on the move is decided; the old hash
   is the evidence that it may not be finished (``unit`` differs from the unit it is
   stored in).
2. :meth:`Mover.receive`: ``move.lua`` creates the request in the new unit from the old hash
   and timeline, with the version after step 1 plus one, queued and open. It does nothing
   if the new unit has that version already (the retry of a move done before).
3. assist items, if the ruling named assisting units (``server.center.actions``): each is
   created under its own id, or found there already.
4. the id -> unit index names the new unit: readers now find the request there.
5. dispatch in the new unit (a crash before it leaves the request in the new unit's queue,
   which the queue sweep moves).

Until step 4 the index names the old unit, and whoever reads the request there
(:meth:`server.center.actions.CenterActions.current`) sees the unfinished move and finishes
it: the request is never lost (it is in one unit's index at every moment) nor duplicated
(the new unit's copy is created once, by version). The deadlines travel in the hash: the
citizen's clock keeps running.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from server.store import keys
from server.store.requests import Actor, RequestRecord, event_json
from server.store.scripts import Scripts
from server.store.text import text


def unfinished_move(stored_in: str, record: RequestRecord) -> str:
    """The unit a request stored in ``stored_in`` is on its way to ("" : none)."""
    return record.unit if record.unit and record.unit != stored_in else ""


class Mover:
    def __init__(self, redis: Redis, scripts: Scripts, events_maxlen: int) -> None:
        self._redis = redis
        self._scripts = scripts
        self._events_maxlen = events_maxlen

    async def receive(self, from_unit: str, request_id: str, actor: Actor) -> RequestRecord:
        """Step 2: the request, committed as ``reassigned`` in ``from_unit``, created in the
        unit it names (once). Returns the request as the new unit holds it."""
        raw = await self._redis.hgetall(keys.request(from_unit, request_id))
        old = RequestRecord.from_hash(raw)
        to_unit = unfinished_move(from_unit, old)
        if not to_unit:
            raise ValueError(f"request {request_id} in {from_unit} is not moving")
        timeline = [
            text(e) for e in await self._redis.lrange(keys.timeline(from_unit, request_id), 0, -1)
        ]
        fields = {text(k): text(v) for k, v in raw.items() if text(k) != "v"}
        now = time.time()
        arrived = [
            event_json(
                "reassigned_in",
                request_id,
                now,
                actor,
                unit=to_unit,
                from_unit=from_unit,
                category=old.category,
            )
        ]
        if old.assist:
            arrived.append(
                event_json("assist_requested", request_id, now, actor, units=old.assist.split(","))
            )
        pairs = [item for kv in fields.items() for item in kv]
        notices, open_notices = await self._notices_of(from_unit, request_id)
        await self._scripts.move(
            keys=[
                keys.request(to_unit, request_id),
                keys.timeline(to_unit, request_id),
                keys.events(to_unit),
                keys.queue(to_unit),
                keys.open_requests(to_unit),
                keys.notices(to_unit, request_id),
                keys.request_open_notices(to_unit, request_id),
                keys.open_notices(to_unit),
            ],
            args=[
                old.v + 1,
                request_id,
                old.received_at,
                self._events_maxlen,
                len(timeline),
                len(fields),
                len(notices),
                len(open_notices),
                *timeline,
                *pairs,
                *(item for kv in notices.items() for item in kv),
                *(item for kv in open_notices.items() for item in kv),
                *arrived,
            ],
        )
        if open_notices:  # they are the new unit's to answer for now
            pipe = self._redis.pipeline(transaction=False)
            pipe.zrem(keys.open_notices(from_unit), *open_notices)
            pipe.delete(keys.request_open_notices(from_unit, request_id))
            await pipe.execute()
        moved = await self._redis.hgetall(keys.request(to_unit, request_id))
        return RequestRecord.from_hash(moved)

    async def _notices_of(
        self, unit: str, request_id: str
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The request's notices in ``unit`` (id -> JSON), and its open ones (id -> issued
        at, epoch ms, as the unit's open-notices index scores them)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(keys.notices(unit, request_id))
        pipe.smembers(keys.request_open_notices(unit, request_id))
        records, open_ids = await pipe.execute()
        notices = {text(k): text(v) for k, v in records.items()}
        opened = sorted(text(i) for i in open_ids)
        scores = await self._redis.zmscore(keys.open_notices(unit), opened) if opened else []
        return notices, {
            notice_id: str(int(score or 0)) for notice_id, score in zip(opened, scores, strict=True)
        }

    async def point_index(self, request_id: str, unit: str) -> None:
        """Step 4: readers find the request in ``unit``."""
        await self._redis.hset(keys.request_units(), request_id, unit)
