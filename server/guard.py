"""Limits on what one client may take: connections, rates, failed hellos. Pure: no sockets, no
clocks (callers pass ``now``), no logging; :mod:`server.net` and the field session carry the
decisions out.

* :class:`TokenBucket`: ``rate`` per second with bursts up to ``burst``.
* :class:`AddressBuckets`: one bucket per client address, bounded in number.
* :class:`ConnectionLedger`: open connections, total and per address, against two caps.
* :func:`default_max_connections`: the connection cap derived from the open-files limit.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass, field

# Descriptors a hub needs besides its clients' sockets: Redis connections beyond the pool
# (pub/sub, the blocking pool's spare), the ledger's database connections, the log and city
# files, static files being served, the listening socket, the embedded Redis's pipes.
FIXED_RESERVE_FDS = 128
UNLIMITED_FDS = 1_048_576  # what an unlimited RLIMIT_NOFILE counts as


def default_max_connections(open_files_limit: int, redis_connections: int) -> int:
    """The concurrent-connection cap when ``DISPATCH_MAX_CONNECTIONS`` is 0:

        open-files limit - (redis_connections + FIXED_RESERVE_FDS), at least 16

    so that a flood of clients can never take the descriptors Redis, the database and files
    need (an accept that fails with EMFILE drops the connection it was for, whoever it was).
    """
    if open_files_limit < 0:  # RLIM_INFINITY
        open_files_limit = UNLIMITED_FDS
    return max(16, open_files_limit - redis_connections - FIXED_RESERVE_FDS)


def says_nothing_more() -> TokenBucket:
    """The budget of a page's socket after its hello (the center feed, the wall map): a
    page sends nothing more, so a few stray frames are let pass and a stream of them closes
    the socket (RATE_LIMITED) instead of costing the hub a decode each."""
    return TokenBucket(rate=0.2, burst=5)


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full."""

    rate: float
    burst: float
    tokens: float = -1.0  # -1: full at the first call
    updated: float = 0.0

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are that many; False (nothing spent) otherwise."""
        # _refill, written out: this runs for every frame a phone sends
        tokens = self.tokens
        if tokens < 0:
            tokens = self.burst
        elif now > self.updated:
            tokens += (now - self.updated) * self.rate
            if tokens > self.burst:
                tokens = self.burst
        if now > self.updated:
            self.updated = now
        if tokens < cost:
            self.tokens = tokens
            return False
        self.tokens = tokens - cost
        return True

    def available(self, now: float) -> float:
        self._refill(now)
        return self.tokens

    def full(self, now: float) -> bool:
        return self.available(now) >= self.burst

    def _refill(self, now: float) -> None:
        if self.tokens < 0:
            self.tokens = self.burst
        elif now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = max(self.updated, now)


@dataclass
class AddressBuckets:
    """A token bucket per address, e.g. for failed hellos. Bounded: at most ``max_addresses``
    are remembered; full buckets are forgotten first (they hold nothing a new one would not),
    then the oldest, so a flood of addresses costs memory only up to the bound. ``emptied``
    counts buckets running dry, for the caller to report."""

    rate: float
    burst: float
    max_addresses: int = 100_000
    emptied: Burst = field(default_factory=lambda: Burst(60.0))
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def allows(self, address: str, now: float, cost: float = 1.0) -> bool:
        """Whether ``address`` has ``cost`` tokens left (nothing is spent)."""
        bucket = self._buckets.get(address)
        return bucket is None or bucket.available(now) >= cost

    def spend(self, address: str, now: float, cost: float = 1.0) -> float:
        """Spend from ``address``'s bucket (down to 0 at most); returns what is left."""
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self.max_addresses:
                self._forget(now)
            bucket = self._buckets[address] = TokenBucket(self.rate, self.burst)
        if not bucket.take(now, cost):
            bucket.tokens = 0.0
        return bucket.tokens

    def __len__(self) -> int:
        return len(self._buckets)

    def _forget(self, now: float) -> None:
        for address in [a for a, b in self._buckets.items() if b.full(now)]:
            del self._buckets[address]
        while len(self._buckets) >= self.max_addresses:
            del self._buckets[next(iter(self._buckets))]


class Verdict(enum.Enum):
    ADMITTED = "admitted"
    OVER_TOTAL = "over_total"  # the process holds max_total connections
    OVER_ADDRESS = "over_address"  # this address holds max_per_address connections


@dataclass
class ConnectionLedger:
    """Open connections by key (the transport: the same across an HTTP -> WebSocket upgrade),
    counted in total and per address. ``max_per_address`` 0: no per-address cap."""

    max_total: int
    max_per_address: int
    _open: dict[Hashable, str] = field(default_factory=dict)
    _per_address: dict[str, int] = field(default_factory=dict)
    refused: int = 0  # connections refused since start

    def admit(self, key: Hashable, address: str) -> Verdict:
        """Count a new connection, or refuse it (then nothing is counted). A key already
        counted is admitted again without counting twice."""
        if key in self._open:
            return Verdict.ADMITTED
        if len(self._open) >= self.max_total:
            self.refused += 1
            return Verdict.OVER_TOTAL
        held = self._per_address.get(address, 0)
        if self.max_per_address and held >= self.max_per_address:
            self.refused += 1
            return Verdict.OVER_ADDRESS
        self._open[key] = address
        self._per_address[address] = held + 1
        return Verdict.ADMITTED

    def release(self, key: Hashable) -> None:
        """Forget a connection; a key not counted (refused, or released before) is ignored."""
        address = self._open.pop(key, None)
        if address is None:
            return
        held = self._per_address[address] - 1
        if held:
            self._per_address[address] = held
        else:
            del self._per_address[address]

    @property
    def total(self) -> int:
        return len(self._open)

    def held_by(self, address: str) -> int:
        return self._per_address.get(address, 0)


@dataclass(slots=True)
class Burst:
    """Counts repeated events and says when to report them: the first of a burst at once,
    then at most once per ``every_s`` with the count since the last report. A quiet period of
    ``every_s`` ends the burst."""

    every_s: float
    count: int = 0  # events not yet reported
    reported_at: float | None = None
    last_at: float = 0.0

    def note(self, now: float, events: int = 1) -> int:
        """Record ``events``; returns how many to report now (0: stay quiet)."""
        quiet = self.reported_at is not None and now - self.last_at >= self.every_s
        self.last_at = now
        self.count += events
        if self.reported_at is None or quiet or now - self.reported_at >= self.every_s:
            count, self.count, self.reported_at = self.count, 0, now
            return count
        return 0
