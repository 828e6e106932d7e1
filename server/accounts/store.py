"""Accounts in SQL: people, their API tokens, their browser sessions, and the record of every
change. Shares the ledger's engine (SQLite or PostgreSQL); creates its own tables.

Secrets go in and come out once (a new token, a new session id); only their hashes are kept.
Password hashing is not done here (see :mod:`server.accounts.passwords`): callers pass the
hash, so no method of this class spends CPU outside the database.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from sqlalchemy import Table, and_, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.accounts import tables
from server.accounts.model import BOOTSTRAP_BY, Principal, new_secret, secret_hash

_PUBLIC = (
    tables.accounts.c.username,
    tables.accounts.c.name,
    tables.accounts.c.role,
    tables.accounts.c.unit,
    tables.accounts.c.created_at,
    tables.accounts.c.created_by,
    tables.accounts.c.disabled_at,
)


class UsernameTaken(Exception):
    """An account with that username exists."""


class AccountStore:
    """Create with :meth:`open` (which creates the tables if missing)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @classmethod
    async def open(cls, engine: AsyncEngine) -> AccountStore:
        # Several hubs may start at once: a create_all that loses the race is retried.
        for attempt in range(5):
            try:
                async with engine.begin() as conn:
                    await conn.run_sync(tables.metadata.create_all)
                break
            except DBAPIError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.1 * (attempt + 1))
        return cls(engine)

    # ---- accounts ------------------------------------------------------------------------

    async def create(
        self,
        username: str,
        name: str,
        role: str,
        unit: str | None,
        password_hash: str | None,
        by: str,
    ) -> dict[str, Any]:
        """Insert the account; raises UsernameTaken."""
        now = time.time()
        row = {
            "username": username,
            "name": name,
            "role": role,
            "unit": unit or None,
            "password_hash": password_hash,
            "created_at": now,
            "created_by": by,
        }
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(tables.accounts).values(row))
                await _record(
                    conn,
                    now,
                    by,
                    "created",
                    username,
                    {"name": name, "role": role, "unit": unit or None},
                )
        except IntegrityError:
            raise UsernameTaken(username) from None
        return {k: v for k, v in row.items() if k != "password_hash"} | {"disabled_at": None}

    async def ensure_bootstrap(self, username: str, name: str, role: str, unit: str) -> bool:
        """Create a bootstrap account (no password) unless it exists. True if it was created.
        Safe when several hubs start together."""
        now = time.time()
        row = {
            "username": username,
            "name": name,
            "role": role,
            "unit": unit or None,
            "password_hash": None,
            "created_at": now,
            "created_by": BOOTSTRAP_BY,
        }
        async with self.engine.begin() as conn:
            result = await conn.execute(self._insert_ignore(tables.accounts).values(row))
            created = bool(result.rowcount)
            if created:
                await _record(
                    conn,
                    now,
                    BOOTSTRAP_BY,
                    "created",
                    username,
                    {"name": name, "role": role, "unit": unit or None},
                )
        return created

    async def get(self, username: str) -> dict[str, Any] | None:
        """The account with its password hash, or None."""
        async with self.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(tables.accounts).where(tables.accounts.c.username == username)
                    )
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    async def everyone(self) -> list[dict[str, Any]]:
        """Every account (no password hash) with its tokens (no hash), by username."""
        t = tables.account_tokens
        async with self.engine.connect() as conn:
            people = [
                dict(r)
                for r in (
                    await conn.execute(select(*_PUBLIC).order_by(tables.accounts.c.username))
                ).mappings()
            ]
            tokens = (
                await conn.execute(
                    select(
                        t.c.id,
                        t.c.username,
                        t.c.label,
                        t.c.created_at,
                        t.c.created_by,
                        t.c.revoked_at,
                    ).order_by(t.c.created_at)
                )
            ).mappings()
            by_user: dict[str, list[dict[str, Any]]] = {}
            for token in tokens:
                by_user.setdefault(token["username"], []).append(
                    {k: v for k, v in token.items() if k != "username"}
                )
        for person in people:
            person["tokens"] = by_user.get(person["username"], [])
        return people

    async def disable(self, username: str, by: str) -> bool:
        """Disable the account (its tokens and sessions stop working). False if no such
        account; disabling a disabled account changes nothing."""
        now = time.time()
        a = tables.accounts
        async with self.engine.begin() as conn:
            found = (
                await conn.execute(select(a.c.disabled_at).where(a.c.username == username))
            ).first()
            if found is None:
                return False
            if found.disabled_at is None:
                await conn.execute(
                    update(a).where(a.c.username == username).values(disabled_at=now)
                )
                await _record(conn, now, by, "disabled", username, {})
        return True

    async def set_password_hash(
        self, username: str, password_hash: str, by: str, action: str = "password_rehashed"
    ) -> None:
        now = time.time()
        a = tables.accounts
        async with self.engine.begin() as conn:
            await conn.execute(
                update(a).where(a.c.username == username).values(password_hash=password_hash)
            )
            await _record(conn, now, by, action, username, {})

    async def history(self, username: str | None = None) -> list[dict[str, Any]]:
        """The account actions (all, or of one account), oldest first."""
        e = tables.account_events
        query = select(e).order_by(e.c.id)
        if username is not None:
            query = query.where(e.c.username == username)
        async with self.engine.connect() as conn:
            rows = [dict(r) for r in (await conn.execute(query)).mappings()]
        for row in rows:
            row["detail"] = json.loads(row["detail"] or "{}")
        return rows

    # ---- API tokens ----------------------------------------------------------------------

    async def add_token(self, username: str, label: str, by: str) -> tuple[str, str]:
        """A new token for the account: (its id, the secret, shown this once)."""
        now = time.time()
        token_id = "T" + secrets.token_hex(6)
        secret = new_secret()
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(tables.account_tokens).values(
                    id=token_id,
                    username=username,
                    label=label,
                    token_hash=secret_hash(secret),
                    created_at=now,
                    created_by=by,
                )
            )
            await _record(
                conn, now, by, "token_added", username, {"token": token_id, "label": label}
            )
        return token_id, secret

    async def revoke_token(self, username: str, token_id: str, by: str) -> str | None:
        """Revoke the token; returns its hash (to forget it from caches), None if the account
        has no such token. Revoking twice is harmless."""
        now = time.time()
        t = tables.account_tokens
        async with self.engine.begin() as conn:
            found = (
                await conn.execute(
                    select(t.c.token_hash, t.c.revoked_at).where(
                        and_(t.c.id == token_id, t.c.username == username)
                    )
                )
            ).first()
            if found is None:
                return None
            if found.revoked_at is None:
                await conn.execute(update(t).where(t.c.id == token_id).values(revoked_at=now))
                await _record(conn, now, by, "token_revoked", username, {"token": token_id})
        return str(found.token_hash)

    async def by_token_hash(self, token_hash: str) -> Principal | None:
        """The enabled account whose live token has this hash."""
        t, a = tables.account_tokens, tables.accounts
        query = (
            select(a.c.username, a.c.role, a.c.unit, a.c.name)
            .join(t, t.c.username == a.c.username)
            .where(
                t.c.token_hash == token_hash, t.c.revoked_at.is_(None), a.c.disabled_at.is_(None)
            )
        )
        return await self._principal(query)

    # ---- sessions ------------------------------------------------------------------------

    async def open_session(self, username: str, lifetime_s: float) -> tuple[str, float]:
        """A new browser session: (its secret id for the cookie, when it expires). Sessions
        that expired a day ago or more are deleted on the way."""
        now = time.time()
        secret = new_secret()
        s = tables.account_sessions
        async with self.engine.begin() as conn:
            await conn.execute(delete(s).where(s.c.expires_at < now - 86_400))
            await conn.execute(
                insert(s).values(
                    session_hash=secret_hash(secret),
                    username=username,
                    created_at=now,
                    expires_at=now + lifetime_s,
                )
            )
        return secret, now + lifetime_s

    async def end_session(self, session_hash: str) -> None:
        s = tables.account_sessions
        async with self.engine.begin() as conn:
            await conn.execute(
                update(s)
                .where(s.c.session_hash == session_hash, s.c.ended_at.is_(None))
                .values(ended_at=time.time())
            )

    async def by_session_hash(self, session_hash: str) -> tuple[Principal, float] | None:
        """The enabled account of a live session with this hash, and when it expires."""
        s, a = tables.account_sessions, tables.accounts
        query = (
            select(a.c.username, a.c.role, a.c.unit, a.c.name, s.c.expires_at)
            .join(s, s.c.username == a.c.username)
            .where(
                s.c.session_hash == session_hash,
                s.c.ended_at.is_(None),
                s.c.expires_at > time.time(),
                a.c.disabled_at.is_(None),
            )
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return Principal(row.username, row.role, row.unit or "", row.name), float(row.expires_at)

    async def principal(self, username: str) -> Principal | None:
        """The account as a principal if it exists and is enabled."""
        a = tables.accounts
        query = select(a.c.username, a.c.role, a.c.unit, a.c.name).where(
            a.c.username == username, a.c.disabled_at.is_(None)
        )
        return await self._principal(query)

    async def _principal(self, query: Any) -> Principal | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else Principal(row.username, row.role, row.unit or "", row.name)

    def _insert_ignore(self, table: Table) -> Any:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table).on_conflict_do_nothing()


async def _record(
    conn: AsyncConnection, at: float, by: str, action: str, username: str, detail: dict[str, Any]
) -> None:
    await conn.execute(
        insert(tables.account_events).values(
            at=at,
            by=by,
            action=action,
            username=username,
            detail=json.dumps(detail, ensure_ascii=False, separators=(",", ":")),
        )
    )
