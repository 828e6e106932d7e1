"""The ledger's schema migrations (Alembic, run by ``Ledger.open``), on a SQLite file and on
PostgreSQL (a fresh database per test; skipped, visibly, when none answers on 5432):

- an empty database is brought to the head, and its schema is exactly ``tables.py``'s;
- a database made by the release before migrations (its frozen schema, no
  ``alembic_version``) is recognised, recorded as the baseline and upgraded, its rows kept;
- processes opening one database at once migrate it once;
- a database with ledger tables of unknown shape is refused, not half-migrated.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from server.ledger import (
    Ledger,
    async_database_url,
    find_actions,
    find_messages,
    find_notices,
    find_requests,
    migrate,
    tables,
)
from tests import ledger_schema_before_migrations as before


async def engine_of(database_url: str) -> AsyncEngine:
    if database_url.startswith("sqlite"):
        Path(database_url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    return create_async_engine(async_database_url(database_url))


def schema_differences(connection: Connection) -> list[Any]:
    """What autogenerate would write to bring the database to ``tables.py`` (the ledger's
    tables only): nothing, when the migrations and the tables agree."""
    context = MigrationContext.configure(
        connection,
        opts={
            "include_name": lambda name, type_, _p: (
                type_ != "table" or name in tables.metadata.tables
            ),
            "compare_type": True,
        },
    )
    return list(compare_metadata(context, tables.metadata))


async def revision_of(ledger: Ledger) -> str | None:
    async with ledger.engine.connect() as conn:
        return await migrate.current_revision(conn)


async def test_an_empty_database_is_brought_to_the_head(database_url: str) -> None:
    ledger = await Ledger.open(database_url)
    try:
        assert await revision_of(ledger) == migrate.head()
        async with ledger.engine.connect() as conn:
            assert await conn.run_sync(schema_differences) == []
    finally:
        await ledger.close()


RID = "20240501-000001"
# What the previous release recorded of a request: its events as the streams carried them.
PAST: list[dict[str, Any]] = [
    {"type": "received", "by": "calltaker:wang", "category": "water_main_burst"},
    {
        "type": "citizen_message_queued",
        "by": "system:citizen",
        "key": "K1",
        "message": "M1",
        "event": "received",
        "lang": "zh",
        "text": "收到",
        "phone": "*******0000",
    },
    {
        "type": "citizen_message_attempt",
        "by": "system:citizen",
        "key": "K1",
        "message": "M1",
        "attempt": 1,
        "outcome": "delivered",
        "status": 200,
    },
    {"type": "citizen_message_delivered", "by": "system:citizen", "key": "K1", "attempts": 1},
    {
        "type": "notice_issued",
        "by": "system:supervision",
        "notice": f"{RID}-accept-1",
        "notice_kind": "accept",
        "level": 1,
        "due_at": 1714521900.0,
    },
    {"type": "cancelled", "by": "center:li", "reason": "unfounded", "note": "no leak"},
    {
        "type": "notice_closed",
        "by": "system",
        "notice": f"{RID}-accept-1",
        "notice_kind": "accept",
        "level": 1,
        "closed_by": "cancelled",
    },
]


def _old_event(n: int, event: dict[str, Any]) -> dict[str, Any]:
    at = 1714521600.0 + n
    return {
        "unit": "water",
        "stream_id": f"1714521600000-{n}",
        "sort_key": f"{1714521600000:015d}-{n:020d}",
        "request_id": RID,
        "type": event["type"],
        "at": at,
        "by": event["by"],
        "data": json.dumps({"request": RID, "at": at, **event}, ensure_ascii=False),
    }


async def test_the_previous_release_is_taken_over_with_its_rows(database_url: str) -> None:
    engine = await engine_of(database_url)
    async with engine.begin() as conn:  # what the release before migrations did at start
        await conn.run_sync(before.metadata.create_all)
        await conn.execute(
            before.requests.insert().values(
                id=RID,
                unit="water",
                state="cancelled",
                caller_phone="13800000000",
                received_at=1714521600.0,
                event_key="000001714521600000-00000000000000000005",
                version=7,
            )
        )
        await conn.execute(before.events.insert(), [_old_event(n, e) for n, e in enumerate(PAST)])
        await conn.execute(
            before.audit.insert().values(
                at=1.0, by="center:li", action="ledger_export", detail="{}"
            )
        )
        tables_before = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    await engine.dispose()
    assert "alembic_version" not in tables_before

    ledger = await Ledger.open(database_url)
    try:
        assert await revision_of(ledger) == migrate.head()
        async with ledger.engine.connect() as conn:
            assert await conn.run_sync(schema_differences) == []
            count = select(func.count()).select_from(tables.events)
            assert (await conn.execute(count)).scalar() == len(PAST)
            assert (await conn.execute(select(tables.audit.c.by))).scalars().all() == ["center:li"]
        [row] = await find_requests(ledger)
        assert (row["id"], row["state"], row["caller_phone"]) == (RID, "cancelled", "13800000000")
        # The events recorded before are replayed into the new tables and columns.
        assert row["cancel_reason"] == "unfounded"
        [notice] = await find_notices(ledger)
        assert (notice["id"], notice["issued_by"], notice["closed_event"], notice["state"]) == (
            f"{RID}-accept-1",
            "system:supervision",
            "cancelled",
            "closed",
        )
        assert notice["closed_by"] is None  # that release did not say whose step met it
        [cancel] = await find_actions(ledger)
        assert (cancel["action"], cancel["by"], cancel["reason"]) == (
            "cancelled",
            "center:li",
            "unfounded",
        )
        [message] = await find_messages(ledger)
        assert (message["outcome"], message["attempts"], message["queued_by"]) == (
            "delivered",
            1,
            "system:citizen",
        )
        assert [t["status"] for t in message["tries"]] == [200]
    finally:
        await ledger.close()

    again = await Ledger.open(database_url)  # the next start: nothing to do
    try:
        assert await revision_of(again) == migrate.head()
    finally:
        await again.close()


async def test_every_revision_upgrades_from_the_one_before(database_url: str) -> None:
    """Step by step from the baseline, each revision on the database its predecessor left
    (what a ledger that missed several releases goes through), then down and up again."""
    from alembic import command

    engine = await engine_of(database_url)
    script = ScriptDirectory.from_config(migrate.config())
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert revisions[0] == migrate.BASELINE and revisions[-1] == migrate.head()

    def run(connection: Connection, action: str, target: str) -> None:
        cfg = migrate.config()
        cfg.attributes["connection"] = connection
        getattr(command, action)(cfg, target)

    try:
        for revision in revisions:
            async with engine.begin() as conn:
                await conn.run_sync(run, "upgrade", revision)
                assert await migrate.current_revision(conn) == revision
        async with engine.begin() as conn:
            assert await conn.run_sync(schema_differences) == []
            await conn.run_sync(run, "downgrade", "base")
            assert await conn.run_sync(lambda c: inspect(c).get_table_names()) == [
                "alembic_version"
            ]
            await conn.run_sync(run, "upgrade", "head")
            assert await conn.run_sync(schema_differences) == []
    finally:
        await engine.dispose()


async def test_processes_starting_together_migrate_once(database_url: str) -> None:
    """Hubs and ledger processes open the database at once: each with its own engine (its
    own connections), as separate processes would."""
    opened = await asyncio.gather(*(Ledger.open(database_url) for _ in range(4)))
    try:
        async with opened[0].engine.connect() as conn:
            versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
            assert [v for (v,) in versions] == [migrate.head()]
            assert await conn.run_sync(schema_differences) == []
    finally:
        for ledger in opened:
            await ledger.close()


async def test_previous_release_opened_by_several_at_once(database_url: str) -> None:
    engine = await engine_of(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(before.metadata.create_all)
    await engine.dispose()
    opened = await asyncio.gather(*(Ledger.open(database_url) for _ in range(3)))
    try:
        for ledger in opened:
            assert await revision_of(ledger) == migrate.head()
    finally:
        for ledger in opened:
            await ledger.close()


async def test_a_ledger_of_unknown_shape_is_refused(database_url: str) -> None:
    engine = await engine_of(database_url)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE requests (id VARCHAR PRIMARY KEY, unit VARCHAR)"))
    await engine.dispose()
    with pytest.raises(migrate.UnknownSchema, match=r"requests\.category"):
        await Ledger.open(database_url)
    engine = await engine_of(database_url)
    try:
        async with engine.connect() as conn:  # nothing was changed
            names = await conn.run_sync(lambda c: inspect(c).get_table_names())
            assert names == ["requests"]
    finally:
        await engine.dispose()


async def test_a_ledger_migrated_by_a_newer_release_is_refused(database_url: str) -> None:
    ledger = await Ledger.open(database_url)
    async with ledger.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    await ledger.close()
    with pytest.raises(migrate.UnknownSchema, match="9999.*newer release"):
        await Ledger.open(database_url)
