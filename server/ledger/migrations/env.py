"""Alembic's entry point for the ledger's migrations (see README.md here).

Two ways in:

- from :func:`server.ledger.migrate.upgrade` (the hub, ``python -m server.ledger``): the
  caller hands over a connection already in a transaction and holding the migration lock
  (``config.attributes["connection"]``); everything runs in that transaction.
- from the ``alembic`` command line (``-c server/ledger/migrations/alembic.ini``), to write a
  migration: the database is ``-x url=...``, else ``DATABASE_URL``, else a scratch SQLite
  file under ``var/``.

Only the ledger's tables are compared: the same database holds the accounts' tables
(:mod:`server.accounts.tables`), which are not the ledger's to drop.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from server.ledger.tables import metadata
from server.ledger.writer import async_database_url

SCRATCH = Path("var") / "migrations-scratch.sqlite3"


def include_name(name: str | None, type_: str, _parents: Any) -> bool:
    """Reflected tables that are not the ledger's (the accounts') are left out."""
    return type_ != "table" or name in metadata.tables


def configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_name=include_name,
        # SQLite alters a table by copying it: autogenerate writes batch operations.
        render_as_batch=True,
        compare_type=True,
    )


def run(connection: Connection) -> None:
    configure(connection)
    with context.begin_transaction():
        context.run_migrations()


def command_line_url() -> str:
    given: dict[str, Any] = context.get_x_argument(as_dictionary=True)
    url = given.get("url") or os.environ.get("DATABASE_URL")
    if not url:
        SCRATCH.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{SCRATCH.resolve()}"
    return async_database_url(str(url))


async def run_from_command_line() -> None:
    engine = create_async_engine(command_line_url())
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()


given_connection = context.config.attributes.get("connection")
if given_connection is not None:
    run(given_connection)
elif context.is_offline_mode():
    context.configure(url=command_line_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(run_from_command_line())
