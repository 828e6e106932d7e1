"""Counting the hub's Redis round trips: every command, pipeline or script call a connection
sends is one. The hot path is budgeted in round trips (SPEC: a request's whole lifecycle in
at most 7), so the count is kept always (an integer increment) and shown to admin and center
in the health details; the tests read it around a request's lifecycle."""

from __future__ import annotations

from typing import Any

from redis.asyncio import ConnectionPool


class RoundTrips:
    def __init__(self) -> None:
        self.count = 0


def count_round_trips(pool: ConnectionPool) -> RoundTrips:
    """Make every connection of ``pool`` count what it sends (the pool's own connection
    class, TCP, TLS or Unix socket, keeps working: it is subclassed, not replaced)."""
    counter = RoundTrips()
    base: Any = pool.connection_class

    class Counting(base):  # type: ignore[misc, valid-type]
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            counter.count += 1
            await super().send_packed_command(command, check_health)

    Counting.__name__ = f"Counting{base.__name__}"
    pool.connection_class = Counting
    return counter
