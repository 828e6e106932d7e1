"""This process's squad connections: a local registry, nothing more.

The :class:`Hub` knows which squad is connected to this process and hands a numbered frame
to its session. It talks to no one: recording a squad online in Redis is
:class:`~server.presence.tracker.PresenceTracker`'s job, and routing a push to a squad
connected to another process is :class:`~server.broker.Broker`'s.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Protocol

from dispatch_field.codes import CloseCode


class Connection(Protocol):
    """What the registry needs of a squad's session."""

    @property
    def unit(self) -> str: ...

    @property
    def squad(self) -> str: ...

    @property
    def last_heard(self) -> float: ...

    def push_numbered(self, seq: int, body: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


def new_hub_id() -> str:
    """A name for this process, unique across restarts: host, pid and a random tail."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class Hub:
    """The squads connected to this process, by squad id."""

    def __init__(self, hub_id: str | None = None) -> None:
        self.id = hub_id or new_hub_id()
        self.sessions: dict[str, Connection] = {}
        # Sessions whose hello is being checked, by squad: they are handed the squad's frames
        # too (a frame numbered after their outbox was read must reach them), but close no one.
        self.joining: dict[str, list[Connection]] = {}

    def expect(self, session: Connection) -> None:
        """``session``'s hello is being checked: hand it the squad's frames meanwhile."""
        self.joining.setdefault(session.squad, []).append(session)

    def unexpect(self, session: Connection) -> None:
        """The hello of ``session`` was checked (accepted or refused)."""
        waiting = self.joining.get(session.squad)
        if waiting is not None and session in waiting:
            waiting.remove(session)
            if not waiting:
                del self.joining[session.squad]

    def register(self, session: Connection) -> None:
        """``session`` is now the squad's connection here; an older one of the same squad is
        closed (REPLACED): a phone that reconnected before its old socket timed out."""
        self.unexpect(session)
        previous = self.sessions.get(session.squad)
        if previous is not None and previous is not session:
            previous.close(CloseCode.REPLACED, "a newer connection of this squad took over")
        self.sessions[session.squad] = session

    def unregister(self, session: Connection) -> None:
        if self.sessions.get(session.squad) is session:
            del self.sessions[session.squad]

    def holds(self, squad: str) -> bool:
        return squad in self.sessions

    def deliver(self, squad: str, seq: int, body: bytes) -> None:
        """Hand a numbered frame (already in the squad's outbox) to its session, if here."""
        session = self.sessions.get(squad)
        if session is not None:
            session.push_numbered(seq, body)
        if self.joining:
            for waiting in self.joining.get(squad, ()):
                waiting.push_numbered(seq, body)

    def close_silent(self, silent_for_s: float) -> int:
        """Close sessions that sent nothing for ``silent_for_s``; they may resume later."""
        limit = time.monotonic() - silent_for_s
        silent = [s for s in self.sessions.values() if s.last_heard < limit]
        for session in silent:
            session.close(CloseCode.HEARTBEAT_TIMEOUT, "silent too long")
        return len(silent)

    def close_squad(self, squad: str, code: int, reason: str) -> bool:
        """Close the squad's connection here, and any hello of it being checked; whether
        there was one."""
        found = [s for s in (self.sessions.get(squad), *self.joining.get(squad, ())) if s]
        for session in found:
            session.close(code, reason)
        return bool(found)

    def close_all(self, code: int, reason: str) -> None:
        for session in list(self.sessions.values()):
            session.close(code, reason)
