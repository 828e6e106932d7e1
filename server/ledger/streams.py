"""Reading the units' event streams through the consumer group ``ledger``.

Every hub process runs a consumer with its own name; the group hands each entry to one of
them. An entry stays pending on its consumer until acknowledged, which the writer does only
after the entry is committed to SQL. Entries pending on a consumer that died are taken over
with XAUTOCLAIM once idle long enough (Redis >= 6.2).

A unit's keys live in one Cluster slot and units differ, so each stream gets its own
XREADGROUP; they travel in one non-transactional pipeline, without BLOCK (one blocking read
per unit would serialise the pipeline).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from server.store import keys
from server.store.text import text

GROUP = "ledger"
CLAIM_IDLE_MS = 30_000  # an entry pending this long on one consumer is taken over
FORGET_IDLE_MS = 3_600_000  # a consumer this idle with nothing pending is removed


@dataclass(frozen=True, slots=True)
class StreamEntry:
    unit: str
    stream_id: str
    fields: dict[str, str]  # {} when the entry's data is gone (trimmed while pending)


@dataclass
class GroupReader:
    """One consumer's view of the group: which groups exist, and whether entries read
    earlier are still pending on it (``backlog``: at start, after a failed write, after a
    takeover). Pending entries are read again before new ones, so nothing read is lost."""

    consumer: str
    backlog: bool = True
    _groups: set[str] = field(default_factory=set)
    _claim_cursor: dict[str, str] = field(default_factory=dict)
    _last_claim: float = float("-inf")

    async def read(
        self, redis: Redis, units: Sequence[str], count: int, *, claim_idle_ms: int = CLAIM_IDLE_MS
    ) -> list[StreamEntry]:
        """Up to ``count`` entries per unit: this consumer's pending ones if any, else new
        ones. Idle entries of other consumers are claimed first (every claim_idle_ms / 3)."""
        await self._ensure_groups(redis, units)
        if time.monotonic() - self._last_claim >= claim_idle_ms / 3000:
            await self._claim(redis, units, count, claim_idle_ms)
            self._last_claim = time.monotonic()
        if self.backlog:
            pending = await self._read(redis, units, "0", count)
            if pending:
                return pending
            self.backlog = False
        return await self._read(redis, units, ">", count)

    async def _ensure_groups(self, redis: Redis, units: Sequence[str]) -> None:
        missing = [unit for unit in units if unit not in self._groups]
        if not missing:
            return
        pipe = redis.pipeline(transaction=False)
        for unit in missing:
            # From "0": a new ledger records the streams' whole history.
            pipe.xgroup_create(keys.events(unit), GROUP, id="0", mkstream=True)
        results = await pipe.execute(raise_on_error=False)
        for unit, result in zip(missing, results, strict=True):
            if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
                raise result
            self._groups.add(unit)

    async def _claim(self, redis: Redis, units: Sequence[str], count: int, idle_ms: int) -> None:
        """Take over entries idle on other consumers; they join this consumer's backlog.

        Without JUSTID because redis-py drops the cursor with it; the entries themselves are
        read again from the backlog, which also yields the ids of deleted ones (6.2 returns
        those as nil here)."""
        pipe = redis.pipeline(transaction=False)
        for unit in units:
            pipe.xautoclaim(
                keys.events(unit),
                GROUP,
                self.consumer,
                idle_ms,
                start_id=self._claim_cursor.get(unit, "0-0"),
                count=count,
            )
        results = await pipe.execute(raise_on_error=False)
        for unit, result in zip(units, results, strict=True):
            if self._missing_group(unit, result):
                continue
            self._claim_cursor[unit] = text(result[0])
            if result[1] or (len(result) > 2 and result[2]):
                self.backlog = True
        await self._forget_idle_consumers(redis, units)

    async def _forget_idle_consumers(self, redis: Redis, units: Sequence[str]) -> None:
        """Remove consumers (dead hub processes) that hold nothing and are long idle; each
        restart of a hub adds a name. A live one removed by mistake is recreated by its
        next read, losing nothing as it held nothing."""
        pipe = redis.pipeline(transaction=False)
        for unit in units:
            pipe.xinfo_consumers(keys.events(unit), GROUP)
        results = await pipe.execute(raise_on_error=False)
        forget = redis.pipeline(transaction=False)
        for unit, consumers in zip(units, results, strict=True):
            if self._missing_group(unit, consumers):
                continue
            for info in consumers:
                name = text(info["name"])
                if name != self.consumer and not info["pending"] and info["idle"] > FORGET_IDLE_MS:
                    forget.xgroup_delconsumer(keys.events(unit), GROUP, name)
        if len(forget):
            await forget.execute(raise_on_error=False)

    async def _read(
        self, redis: Redis, units: Sequence[str], start: str, count: int
    ) -> list[StreamEntry]:
        pipe = redis.pipeline(transaction=False)
        for unit in units:
            pipe.xreadgroup(GROUP, self.consumer, {keys.events(unit): start}, count=count)
        results = await pipe.execute(raise_on_error=False)
        entries: list[StreamEntry] = []
        for unit, result in zip(units, results, strict=True):
            if self._missing_group(unit, result):
                continue
            for _stream, items in result or ():
                entries.extend(
                    StreamEntry(unit, text(entry_id), _decode(data)) for entry_id, data in items
                )
        return entries

    def _missing_group(self, unit: str, result: Any) -> bool:
        """Whether ``result`` (one stream's reply in a pipeline) is the error "no such group"
        (the stream was deleted, or Redis restarted empty): that stream is skipped and its
        group created again next pass. Any other error is raised."""
        if not isinstance(result, Exception):
            return False
        if isinstance(result, ResponseError) and "NOGROUP" in str(result):
            self._groups.discard(unit)
            self._claim_cursor.pop(unit, None)
            return True
        raise result


async def ack(redis: Redis, entries: Iterable[StreamEntry]) -> None:
    """XACK ``entries`` in their streams (call only once they are committed)."""
    by_unit: dict[str, list[str]] = {}
    for entry in entries:
        by_unit.setdefault(entry.unit, []).append(entry.stream_id)
    if not by_unit:
        return
    pipe = redis.pipeline(transaction=False)
    for unit, ids in by_unit.items():
        pipe.xack(keys.events(unit), GROUP, *ids)
    await pipe.execute()


def with_no_unit(units: Iterable[str]) -> list[str]:
    """The units to read, in order, without repeats, always including ``keys.NO_UNIT``
    (requests routed to police / fire / medical are recorded in its stream)."""
    return list(dict.fromkeys([*units, keys.NO_UNIT]))


def _decode(data: dict[Any, Any] | None) -> dict[str, str]:
    return {text(k): text(v) for k, v in (data or {}).items()}
