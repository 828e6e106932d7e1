"""The accounts' SQL schema (SQLAlchemy Core), in the ledger's database.

Generic types only, as in :mod:`server.ledger.tables`: the same on SQLite and PostgreSQL.
Times are epoch seconds. Secrets are never stored: a token or session is kept as the SHA-256
of its value (see :func:`server.accounts.model.secret_hash`), a password as its argon2 hash.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("username", String, primary_key=True),
    Column("name", String, nullable=False),
    Column("role", String, nullable=False),
    Column("unit", String),  # role unit only
    Column("password_hash", String),  # None: cannot sign in with a password (bootstrap)
    Column("created_at", Float, nullable=False),
    Column("created_by", String, nullable=False),  # actor label, e.g. "admin:bob"
    Column("disabled_at", Float),
)

account_tokens = Table(
    "account_tokens",
    metadata,
    Column("id", String, primary_key=True),  # public id, to list and revoke
    Column("username", String, ForeignKey("accounts.username"), nullable=False),
    Column("label", String, nullable=False),
    Column("token_hash", String, nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("created_by", String, nullable=False),
    Column("revoked_at", Float),
    Index("ix_account_tokens_username", "username"),
)

account_sessions = Table(
    "account_sessions",
    metadata,
    Column("session_hash", String, primary_key=True),
    Column("username", String, ForeignKey("accounts.username"), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("ended_at", Float),  # signed out
    Index("ix_account_sessions_expires_at", "expires_at"),
)

# Every change to an account: who did what to whom, when.
account_events = Table(
    "account_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("by", String, nullable=False),
    Column("action", String, nullable=False),  # created, token_added, token_revoked, ...
    Column("username", String, nullable=False),
    Column("detail", Text),  # JSON
    Index("ix_account_events_username", "username"),
)
