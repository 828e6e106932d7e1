"""Timer entries: the one home of their ``kind:id`` format.

A unit's timers are one sorted set (``keys.timers``): member ``kind:id``, score the due time
in epoch milliseconds, claimed with a lease by whichever process is alive (``due.lua``).
Everything that schedules, cancels or fires a timer builds and parses the member here; the
Lua scripts receive the member ready-made and never spell the format themselves.
"""

from __future__ import annotations

from enum import StrEnum

from redis.asyncio import Redis

from server.store import keys


class TimerKind(StrEnum):
    OFFER = "offer"  # id: assignment; the offer window passes
    OFFLINE = "offline"  # id: squad; offline long enough for its offers to move on
    ALERT = "alert"  # id: squad; offline long enough, holding work, to tell the center
    DEADLINE = "deadline"  # id: request:milestone (server.deadlines); a limit passes
    ESCALATE = "escalate"  # id: request:notice kind:level; a notice's next level is due


def entry(kind: TimerKind, ident: str) -> str:
    """The sorted-set member of a timer."""
    return f"{kind.value}:{ident}"


def parse(member: str | bytes) -> tuple[TimerKind | None, str]:
    """(kind, id) of a member; kind None for a kind this version does not know (left to the
    version that scheduled it, or to be dropped by the caller)."""
    raw = member.decode() if isinstance(member, bytes) else member
    kind, _, ident = raw.partition(":")
    try:
        return TimerKind(kind), ident
    except ValueError:
        return None, ident


def kind_of(member: bytes) -> str:
    """The kind of a member, as text (for labels)."""
    return member.split(b":", 1)[0].decode(errors="replace")


def claimed(reply: list[bytes]) -> list[tuple[bytes, float]]:
    """``due.lua``'s reply as (member, due epoch ms) pairs."""
    return [(reply[i], float(reply[i + 1])) for i in range(0, len(reply) - 1, 2)]


class Held:
    """Timers this process claimed (leased) and has not finished: at shutdown
    :meth:`hand_on` makes them due again at once, so another process fires them now instead
    of when the lease runs out. A finished timer is gone from its set and stays gone."""

    def __init__(self) -> None:
        self._held: dict[str, dict[bytes, float]] = {}

    def claimed(self, unit: str, due: list[tuple[bytes, float]]) -> None:
        self._held.setdefault(unit, {}).update(due)

    def finished(self, unit: str, members: list[bytes]) -> None:
        held = self._held.get(unit, {})
        for member in members:
            held.pop(member, None)

    def __len__(self) -> int:
        return sum(len(held) for held in self._held.values())

    async def hand_on(self, redis: Redis) -> int:
        pipe = redis.pipeline(transaction=False)
        count = 0
        for unit, held in self._held.items():
            if held:
                pipe.zadd(keys.timers(unit), dict(held), xx=True)
                count += len(held)
        if count:
            await pipe.execute()
        self._held.clear()
        return count
