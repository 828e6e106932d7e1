"""Authentication, in one place: a bearer token, a session cookie or a password becomes a
:class:`Principal`.

Intake runs at ~100 requests a second, so a verified token or session is cached in memory
for ``cache_s`` (default 30 s): a disabled account or a revoked token stops working on every
hub within that time (at once on the hub that made the change, which forgets it). Wrong
credentials are counted per client address (:class:`FailureWindow`); an address past the
limit gets 429 for every credential not verified recently and for every password, so a
stolen cookie cannot be brute-forced into working, yet a floor of call-takers behind one
address keeps working while one misconfigured device is refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from server.accounts.model import (
    FailureWindow,
    Principal,
    TtlCache,
    bootstrap_username,
    secret_hash,
)
from server.accounts.passwords import verify_password
from server.accounts.store import AccountStore
from server.settings import Role, Settings, SettingsError

Via = Literal["", "token", "cookie", "password"]


@dataclass(frozen=True, slots=True)
class AuthResult:
    """What authentication made of a request's credentials."""

    principal: Principal | None = None
    via: Via = ""
    failure: Literal["", "invalid", "throttled"] = ""  # "" with no principal: none given
    retry_after_s: float = 0.0


NOBODY = AuthResult()


class Authenticator:
    def __init__(
        self,
        store: AccountStore,
        bootstrap: dict[str, str],
        *,
        cache_s: float,
        failures_per_min: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``bootstrap``: token hash -> username of the DISPATCH_TOKENS accounts (their tokens
        live in the environment, not in the database)."""
        self.store = store
        self._bootstrap = bootstrap
        self._cache: TtlCache[str, Principal] = TtlCache(cache_s)
        self._failures = FailureWindow(failures_per_min)
        self._clock = clock

    @classmethod
    async def start(
        cls,
        store: AccountStore,
        entries: list[tuple[Role, str, str]],
        *,
        cache_s: float,
        failures_per_min: int,
    ) -> Authenticator:
        """Create the bootstrap accounts of DISPATCH_TOKENS ``entries`` (role, unit, token)."""
        bootstrap: dict[str, str] = {}
        for role, unit, token in entries:
            username = bootstrap_username(role, unit)
            name = f"DISPATCH_TOKENS {role}" + (f" {unit}" if unit else "")
            await store.ensure_bootstrap(username, name, role, unit)
            bootstrap[secret_hash(token)] = username
        return cls(store, bootstrap, cache_s=cache_s, failures_per_min=failures_per_min)

    async def from_token(self, token: str, address: str) -> AuthResult:
        return await self._lookup(secret_hash(token), "token", address)

    async def from_session(self, session_id: str, address: str) -> AuthResult:
        return await self._lookup(secret_hash(session_id), "cookie", address)

    async def _lookup(self, hashed: str, via: Via, address: str) -> AuthResult:
        now = self._clock()
        # Keyed by the kind of credential too: a session id is no token, nor a token a
        # session cookie, even while one of them is trusted from the cache.
        key = f"{via}:{hashed}"
        principal = self._cache.get(key, now)
        if principal is not None:
            return AuthResult(principal, via)
        blocked = self._failures.retry_after(address, now)
        if blocked is not None:
            return AuthResult(None, via, "throttled", blocked)
        if via == "cookie":
            found = await self.store.by_session_hash(hashed)
            principal = found[0] if found else None
        elif hashed in self._bootstrap:
            principal = await self.store.principal(self._bootstrap[hashed])
        else:
            principal = await self.store.by_token_hash(hashed)
        if principal is None:
            self._failures.record(address, self._clock())
            return AuthResult(None, via, "invalid")
        self._cache.put(key, principal, self._clock())
        return AuthResult(principal, via)

    async def sign_in(self, username: str, password: str, address: str) -> AuthResult:
        """Check a password (argon2, in a worker thread). A matching password of an enabled
        account gives its principal; anything else is an ``invalid`` failure."""
        blocked = self._failures.retry_after(address, self._clock())
        if blocked is not None:
            return AuthResult(None, "password", "throttled", blocked)
        account = await self.store.get(username)
        stored = account["password_hash"] if account else None
        ok, rehashed = await asyncio.to_thread(verify_password, stored, password)
        if not ok or account is None or account["disabled_at"] is not None:
            self._failures.record(address, self._clock())
            return AuthResult(None, "password", "invalid")
        if rehashed:
            await self.store.set_password_hash(username, rehashed, f"{account['role']}:{username}")
        principal = Principal(username, account["role"], account["unit"] or "", account["name"])
        return AuthResult(principal, "password")

    def forget(self, hashed: str) -> None:
        """Stop trusting a cached token or session now (revoked, signed out)."""
        for via in ("token", "cookie"):
            self._cache.drop(f"{via}:{hashed}")

    def forget_account(self, username: str) -> None:
        """Stop trusting every cached credential of ``username`` now (disabled)."""
        for key, principal in list(self._cache.items()):
            if principal.username == username:
                self._cache.drop(key)


async def open_authenticator(
    engine: AsyncEngine, settings: Settings, unit_exists: Callable[[str], bool]
) -> Authenticator:
    """The accounts' tables in ``engine``'s database, the DISPATCH_TOKENS bootstrap accounts,
    and the authenticator over them. A ``unit=<code>`` entry must name a known unit."""
    entries = settings.bootstrap_tokens()
    units = {unit for role, unit, _ in entries if role == "unit"}
    unknown = sorted(unit for unit in units if not unit_exists(unit))
    if unknown:
        raise SettingsError(f"DISPATCH_TOKENS: no unit {', '.join(unknown)}")
    store = await AccountStore.open(engine)
    return await Authenticator.start(
        store,
        entries,
        cache_s=settings.auth_cache_s,
        failures_per_min=settings.auth_failures_per_min,
    )
