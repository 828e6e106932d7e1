"""Accounts, the pure part: who a caller is, what a new account must look like, how secrets
are hashed, and the two small in-memory structures of authentication (a TTL cache and a
per-address failure window). No I/O, no clock of its own: callers pass ``now``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Annotated, Generic, Literal, TypeVar

import msgspec
from msgspec import Meta

from server.store.requests import Actor

AccountRole = Literal["admin", "calltaker", "center", "unit", "wall"]
ACCOUNT_ROLES: tuple[AccountRole, ...] = ("admin", "calltaker", "center", "unit", "wall")

USERNAME_PATTERN = r"^[a-z][a-z0-9._-]{1,39}$"
PASSWORD_MIN = 10
Username = Annotated[str, Meta(pattern=USERNAME_PATTERN)]
UnitCode = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)]
Password = Annotated[str, Meta(min_length=PASSWORD_MIN, max_length=1024)]
Label = Annotated[str, Meta(min_length=1, max_length=100)]

SESSION_COOKIE = "ld_session"
BOOTSTRAP_BY = "system:bootstrap"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated person (or bootstrap account)."""

    username: str
    role: AccountRole
    unit: str = ""  # the unit of a ``unit`` desk, "" for every other role
    name: str = ""

    def actor(self) -> Actor:
        """The actor recorded in events: ``calltaker:alice``."""
        return Actor(self.role, self.username, self.unit)

    def public(self) -> dict[str, str | None]:
        return {
            "username": self.username,
            "name": self.name,
            "role": self.role,
            "unit": self.unit or None,
        }


class NewAccount(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    name: Label
    role: AccountRole
    password: Password
    unit: UnitCode | None = None


class NewToken(msgspec.Struct, forbid_unknown_fields=True):
    label: Label


class SignIn(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, Meta(max_length=40)]
    password: Annotated[str, Meta(max_length=1024)]


def unit_problems(role: str, unit: str | None, unit_exists: bool) -> dict[str, str]:
    """Field reasons why ``unit`` does not fit ``role`` (empty: it fits). A unit desk names
    an existing unit; every other role names none."""
    if role == "unit":
        if not unit:
            return {"unit": "required for role unit"}
        if not unit_exists:
            return {"unit": f"no unit {unit}"}
        return {}
    return {"unit": f"only role unit has a unit, not {role}"} if unit else {}


def bootstrap_username(role: str, unit: str = "") -> str:
    """The account a DISPATCH_TOKENS entry signs in as."""
    return f"bootstrap-unit-{unit.replace('_', '-')}" if role == "unit" else f"bootstrap-{role}"


def new_secret() -> str:
    """A bearer token or session id: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    """What is stored and looked up instead of a token or session id. A plain hash is enough:
    the secrets are random, so there is nothing to guess from it (passwords use argon2)."""
    return hashlib.sha256(secret.encode()).hexdigest()


K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """At most ``size`` entries, each forgotten ``ttl_s`` after it was put."""

    def __init__(self, ttl_s: float, size: int = 20_000) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K, now: float) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= now:
            del self._items[key]
            return None
        return item[1]

    def put(self, key: K, value: V, now: float) -> None:
        self._items.pop(key, None)
        self._items[key] = (now + self.ttl_s, value)
        while len(self._items) > self.size:
            self._items.popitem(last=False)  # the oldest put

    def drop(self, key: K) -> None:
        self._items.pop(key, None)

    def items(self) -> list[tuple[K, V]]:
        """A snapshot of the entries (expired ones included until they are next read)."""
        return [(key, item[1]) for key, item in self._items.items()]

    def __len__(self) -> int:
        return len(self._items)


class FailureWindow:
    """Failed sign-ins per client address over a sliding window: past ``limit`` failures in
    ``window_s``, the address is blocked until its oldest counted failure leaves the window.
    Successes are not counted."""

    def __init__(self, limit: int, window_s: float = 60.0, addresses: int = 10_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.addresses = addresses
        self._failures: dict[str, deque[float]] = {}

    def record(self, address: str, now: float) -> None:
        times = self._failures.get(address)
        if times is None:
            if len(self._failures) >= self.addresses:
                self._forget_quiet(now)
            times = self._failures[address] = deque(maxlen=max(1, self.limit))
        times.append(now)

    def retry_after(self, address: str, now: float) -> float | None:
        """Seconds until ``address`` may try again, or None if it is not blocked."""
        times = self._failures.get(address)
        if times is None or len(times) < self.limit:
            return None
        wait = times[0] + self.window_s - now
        return wait if wait > 0 else None

    def _forget_quiet(self, now: float) -> None:
        """Drop addresses with no failure in the window (bounded memory under a scan)."""
        quiet = [a for a, t in self._failures.items() if not t or t[-1] + self.window_s <= now]
        for address in quiet:
            del self._failures[address]
        if len(self._failures) >= self.addresses:  # all active: forget the oldest half
            for address in list(self._failures)[: self.addresses // 2]:
                del self._failures[address]
