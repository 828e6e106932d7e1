"""Timer entries: the one home of their ``kind:id`` format.

A unit's timers are one sorted set (``keys.timers``): member ``kind:id``, score the due time
in epoch milliseconds, claimed with a lease by whichever process is alive (``due.lua``).
Everything that schedules, cancels or fires a timer builds and parses the member here; the
Lua scripts receive the member ready-made and never spell the format themselves.
"""

from __future__ import annotations

from enum import StrEnum


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
