"""The ledger's schema, brought up to date at start: Alembic migrations from
``server/ledger/migrations/`` (how to add one: the README.md there).

:func:`upgrade` runs in :meth:`server.ledger.Ledger.open`, so in every hub and every
``python -m server.ledger`` process. Several may start at once against one database: the
whole upgrade (reading the revision, migrating, recording the new revision) runs in one
transaction holding a lock, so one process migrates and the others, waiting on the lock,
then find the database at the head and do nothing:

- PostgreSQL: a transaction-level advisory lock (DDL is transactional there);
- SQLite: ``BEGIN IMMEDIATE`` (the database's write lock, waited for up to the busy
  timeout); SQLite's DDL is transactional too, so a failed migration leaves nothing behind.

A database made before migrations existed (the previous release's ``metadata.create_all``:
the ledger's tables, no ``alembic_version``) is recognised and recorded as the baseline
revision, then upgraded from there; its rows are kept.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Index, MetaData, Table, create_engine, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"  # the schema of the release before migrations
# Any 64-bit number, the same in every process: the PostgreSQL advisory lock of migrations.
_PG_LOCK = 0x4C45_4447_4552  # "LEDGER"


class _OnlyMigrations(logging.Filter):
    """Alembic tells at INFO how it set itself up, at every start of every process; only
    its lines saying which migration runs are worth a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or str(record.msg).startswith("Running ")


logging.getLogger("alembic.runtime.migration").addFilter(_OnlyMigrations())


class UnknownSchema(RuntimeError):
    """The database has ledger tables this code cannot account for."""


def config() -> Config:
    """Alembic's configuration for the ledger's migrations (no ini file needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head() -> str:
    """The newest revision: the one this code expects."""
    return _revisions()[1]


@functools.cache
def _revisions() -> tuple[frozenset[str], str]:
    """Every revision of the migration files, and the newest. Read once per process: alembic
    reads and compiles the files anew each time it is asked (some 20 ms), and they do not
    change while the process runs."""
    scripts = ScriptDirectory.from_config(config())
    newest = scripts.get_current_head()
    assert newest is not None
    return frozenset(script.revision for script in scripts.walk_revisions()), newest


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the database to the head revision (see the module docstring). Idempotent;
    safe when several processes call it at once."""
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # The driver's own transaction handling would begin lazily, after our reads:
            # take the write lock before reading the revision.
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                await conn.run_sync(_upgrade)
            except BaseException:
                await conn.exec_driver_sql("ROLLBACK")
                raise
            await conn.exec_driver_sql("COMMIT")
        else:
            async with conn.begin():
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")
                await conn.run_sync(_upgrade)


async def current_revision(conn: AsyncConnection) -> str | None:
    """The revision the database is at (None: not under migrations)."""
    return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


def _upgrade(connection: Connection) -> None:
    cfg = config()
    cfg.attributes["connection"] = connection
    current = MigrationContext.configure(connection).get_current_revision()
    if current is None and inspect(connection).has_table("requests"):
        _take_over_baseline(connection)
        log.info("ledger made before migrations: recorded as revision %s", BASELINE)
        command.stamp(cfg, BASELINE)
        current = BASELINE
    known, newest = _revisions()
    if current is not None and current not in known:
        raise UnknownSchema(
            f"the ledger is at revision {current}, which this release does not know (its "
            f"newest is {newest}): a newer release migrated it; run that release"
        )
    if current != newest:
        log.info("migrating the ledger from revision %s to %s", current, newest)
        command.upgrade(cfg, "head")


def _take_over_baseline(connection: Connection) -> None:
    """Make a ledger from before migrations the baseline revision: refuse one that lacks a
    table or column of it (not one this code knows how to take over; better than
    half-migrated), and create the baseline's indexes a still older release did not make."""
    expected = _baseline_schema()
    inspector = inspect(connection)
    missing: list[str] = []
    for table, (columns, _indexes) in expected.items():
        if not inspector.has_table(table):
            missing.append(table)
            continue
        found = {column["name"] for column in inspector.get_columns(table)}
        missing += [f"{table}.{name}" for name in sorted(columns - found)]
    if missing:
        raise UnknownSchema(
            "the database has a ledger from before migrations, but not the schema of the "
            f"previous release (missing: {', '.join(missing)}); migrate it by hand"
        )
    for table, (_columns, indexes) in expected.items():
        present = {index["name"] for index in inspector.get_indexes(table)}
        reflected = Table(table, MetaData(), autoload_with=connection)
        for name, indexed in indexes.items():
            if name not in present:
                log.info("creating index %s of the previous release", name)
                Index(name, *(reflected.c[c] for c in indexed)).create(connection)


def _baseline_schema() -> dict[str, tuple[set[str], dict[str, list[str]]]]:
    """Table -> (column names, index name -> its columns) of the baseline revision, read
    from a scratch in-memory database migrated to it (so the frozen migration is the one
    description of it)."""
    engine = create_engine("sqlite://")
    try:
        with engine.begin() as scratch:
            cfg = config()
            cfg.attributes["connection"] = scratch
            command.upgrade(cfg, BASELINE)
            inspector = inspect(scratch)
            return {
                table: (
                    {column["name"] for column in inspector.get_columns(table)},
                    {
                        str(index["name"]): [str(c) for c in index["column_names"]]
                        for index in inspector.get_indexes(table)
                    },
                )
                for table in inspector.get_table_names()
                if table != "alembic_version"
            }
    finally:
        engine.dispose()
