"""The ledger writer: event streams in Redis -> SQL, at least once, idempotently.

Every hub process runs :meth:`Ledger.consume` with its own consumer name. A pass reads a
batch (see :mod:`server.ledger.streams`), writes it in ONE transaction, then acknowledges
it. A crash between commit and XACK re-delivers the entries, which is harmless: events are
unique on (unit, stream_id) and inserted with "on conflict do nothing", and the request row
is folded idempotently (:mod:`server.ledger.fold`). Entries are never acknowledged before
they are committed.

The events of a second request under an id that already has a row are not folded into it
(:func:`server.ledger.fold.attribute`): they go to the ``conflicts`` table, and an error is
logged once per id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from redis.asyncio import Redis
from sqlalchemy import Connection, Engine, Table, bindparam, create_engine, event, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import Insert

from server.ledger import migrate, records, tables
from server.ledger.fold import (
    SNAPSHOT_EVENTS,
    Attribution,
    LedgerEvent,
    attribute,
    fold,
    parse_entry,
)
from server.ledger.streams import CLAIM_IDLE_MS, GroupReader, StreamEntry, ack, with_no_unit
from server.private_files import private_dir, private_file
from server.store import keys
from server.store.availability import is_outage

log = logging.getLogger(__name__)

DEFAULT_CONSUMER = "ledger"
MAX_BACKOFF_S = 5.0
# At most this often a pass while events trickle in: at 2,000 events/s, passes as often as
# they could go held ~60 µs of each event's writer CPU in their fixed cost (measured under
# the load test); an event waits for the ledger up to this much longer.
PACE_MS = 100
_SUPPORTED = ("sqlite", "postgresql")
_T = TypeVar("_T")


def default_database_url(data_dir: str | Path) -> str:
    """The SQLite file of the ledger in ``data_dir`` (the default without DATABASE_URL)."""
    return f"sqlite+aiosqlite:///{Path(data_dir).resolve() / 'ledger.sqlite3'}"


def async_database_url(database_url: str) -> str:
    """``database_url`` with an asyncio driver: ``postgresql://`` (or ``postgres://``) ->
    ``postgresql+asyncpg://``, ``sqlite://`` -> ``sqlite+aiosqlite://``; others unchanged."""
    url = make_url(database_url)
    driver = {
        "postgresql": "postgresql+asyncpg",
        "postgres": "postgresql+asyncpg",
        "sqlite": "sqlite+aiosqlite",
    }.get(url.drivername)
    return (url.set(drivername=driver) if driver else url).render_as_string(hide_password=False)


class Ledger:
    """The SQL ledger. Create with :meth:`open`; close with :meth:`close`."""

    def __init__(self, engine: AsyncEngine) -> None:
        if engine.dialect.name not in _SUPPORTED:
            raise ValueError(
                f"the ledger supports {', '.join(_SUPPORTED)}, not {engine.dialect.name}"
            )
        self.engine = engine
        self._readers: dict[str, GroupReader] = {}
        self._conflicts_logged: set[str] = set()  # request ids whose conflict was logged
        # SQLite: the writer's transactions run on a plain (blocking) engine in a thread of
        # their own, one hand-over a transaction (see _transact).
        self._sync_engine = _sqlite_sync_engine(engine)
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    async def open(cls, database_url: str) -> Ledger:
        """Connect and bring the schema up to date (:func:`server.ledger.migrate.upgrade`:
        creates the tables in an empty database, migrates an older one). Safe when several
        processes open the same database at once."""
        url = make_url(async_database_url(database_url))
        if url.get_backend_name() == "sqlite":
            engine = _sqlite_engine(url.render_as_string(hide_password=False), url.database)
        else:
            engine = create_async_engine(url, pool_pre_ping=True)
        ledger = cls(engine)
        try:
            await migrate.upgrade(engine)
        except BaseException:
            await engine.dispose()
            raise
        return ledger

    async def close(self) -> None:
        if self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
            self._executor = None
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        await self.engine.dispose()

    # ---- the loop ------------------------------------------------------------------------

    async def consume(
        self,
        redis: Redis,
        units: Callable[[], list[str]],
        consumer: str,
        *,
        block_ms: int = 500,
        batch: int = 500,
        claim_idle_ms: int = CLAIM_IDLE_MS,
        pace_ms: int = PACE_MS,
    ) -> None:
        """Record every unit's events until cancelled. ``units`` is called each pass (units
        may be added while the hub runs); ``keys.NO_UNIT`` is always read too. Sleeps
        ``block_ms`` when nothing was waiting. While events trickle in (a pass found fewer
        than ``batch``), a pass starts at most every ``pace_ms``: a pass has a fixed cost
        (a read of every stream, a transaction, an acknowledgement) that a pass of a few
        events would pay for each of them. A failure (database or Redis unreachable) is
        logged and the pass retried with exponential backoff; it never ends the loop."""
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            stop_if_cancelled()
            started = loop.time()
            try:
                done = await self.process_once(
                    redis, units(), consumer, batch=batch, claim_idle_ms=claim_idle_ms
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep recording once things recover
                failures += 1
                wait = min(MAX_BACKOFF_S, 0.1 * 2 ** min(failures, 10))
                # A Redis outage needs no traceback (server.store.availability tells its story).
                log.warning(
                    "ledger pass failed (%s: %s); retry %d in %.1f s",
                    type(exc).__name__,
                    exc,
                    failures,
                    wait,
                    exc_info=failures == 1 and not is_outage(exc),
                )
                await asyncio.sleep(wait)
                continue
            if failures:
                log.info("ledger recording again after %d failed passes", failures)
                failures = 0
            if not done:
                await asyncio.sleep(block_ms / 1000)
            elif done < batch:
                rest = min(pace_ms, block_ms) / 1000 - (loop.time() - started)
                if rest > 0:
                    await asyncio.sleep(rest)

    async def process_once(
        self,
        redis: Redis,
        units: Iterable[str],
        consumer: str = DEFAULT_CONSUMER,
        *,
        batch: int = 500,
        claim_idle_ms: int = CLAIM_IDLE_MS,
    ) -> int:
        """One pass: read up to ``batch`` entries per unit, write them, acknowledge them.
        Returns how many entries were recorded (0: nothing was waiting). On an exception
        nothing of the pass is acknowledged; the entries are read again next pass."""
        reader = self._reader(consumer)
        entries = await self.read(redis, units, consumer, batch=batch, claim_idle_ms=claim_idle_ms)
        if not entries:
            return 0
        try:
            await self.write(redis, entries)
            await ack(redis, entries)
        except BaseException:
            reader.backlog = True  # still pending on this consumer
            raise
        return len(entries)

    # ---- the steps of a pass (public so that tests can stop between them) ----------------

    async def read(
        self,
        redis: Redis,
        units: Iterable[str],
        consumer: str = DEFAULT_CONSUMER,
        *,
        batch: int = 500,
        claim_idle_ms: int = CLAIM_IDLE_MS,
    ) -> list[StreamEntry]:
        """The next entries for ``consumer`` (its pending ones first); they stay pending
        until :func:`server.ledger.streams.ack`."""
        reader = self._reader(consumer)
        return await reader.read(redis, with_no_unit(units), batch, claim_idle_ms=claim_idle_ms)

    async def write(self, redis: Redis, entries: Sequence[StreamEntry]) -> None:
        """Record ``entries`` in one transaction: insert their events (a repeat is ignored)
        and fold them into their requests' rows. Reads the request hashes for the events
        that set static fields before the transaction opens."""
        parsed = _unique(
            e
            for e in (parse_entry(x.unit, x.stream_id, x.fields) for x in entries)
            if e is not None
        )
        if not parsed:
            return  # only entries whose data is gone: nothing to record, just acknowledge
        by_request = _by_request(parsed)
        snapshots = await _read_snapshots(redis, by_request)
        conflicts = await self._transact(
            lambda conn: _record(conn, self.dialect, parsed, by_request, snapshots)
        )
        for request_id, split in conflicts:
            self._log_conflict(request_id, split)

    async def _transact(self, work: Callable[[Connection], _T]) -> _T:
        """``work`` in one transaction, committed if it returns. On SQLite the whole
        transaction runs in the writer's own thread, one hand-over in all: aiosqlite hands
        every statement to its thread and back, and on this kind of machine each such
        hand-over costs more CPU than the statement (measured: 0.8 ms for a ``SELECT 1``
        against 0.03 ms in the thread). On PostgreSQL asyncpg is asynchronous already."""
        if self._sync_engine is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(work)
        engine = self._sync_engine

        def in_thread() -> _T:
            with engine.begin() as conn:
                return work(conn)

        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="ledger-writer")
        return await asyncio.get_running_loop().run_in_executor(self._executor, in_thread)

    def _log_conflict(self, request_id: str, split: Attribution) -> None:
        if request_id in self._conflicts_logged:
            return
        self._conflicts_logged.add(request_id)
        newcomers = sorted({received_at for _, received_at in split.refused})
        log.error(
            "request %s: events of another request under the same id (received at %s; "
            "the ledger's was received at %s) refused and kept in the conflicts table: "
            "Redis gave this id out again",
            request_id,
            ", ".join(f"{t:.3f}" for t in newcomers),
            f"{split.received_at:.3f}",
        )

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    def _reader(self, consumer: str) -> GroupReader:
        reader = self._readers.get(consumer)
        if reader is None:
            reader = self._readers[consumer] = GroupReader(consumer)
        return reader


WAL_ATTEMPTS = 100  # 5 s of tries to turn a new ledger file into WAL (see _sqlite_engine)


def _sqlite_engine(url: str, database: str | None) -> AsyncEngine:
    """SQLite in WAL mode (readers never wait for the writer) with a generous busy timeout:
    several hub processes may write the same file, one transaction at a time. The file holds
    callers' phone numbers: its folder is made 0700 and the file 0600 (SQLite gives the WAL
    and shared-memory files the database file's mode)."""
    if database and database != ":memory:":
        private_dir(Path(database).parent)
        private_file(database)
    engine = create_async_engine(url, connect_args={"timeout": 30})
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_sync_engine(engine: AsyncEngine) -> Engine | None:
    """A blocking engine on the same SQLite file as ``engine`` (None for PostgreSQL and for
    a database in memory, which a second engine would not share)."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    sync = create_engine(url.set(drivername="sqlite+pysqlite"), connect_args={"timeout": 30})
    event.listen(sync, "connect", _sqlite_pragmas)
    return sync


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL and synchronous=NORMAL on every new connection."""
    cursor = dbapi_connection.cursor()
    # Turning a file into WAL takes its exclusive lock; processes that open a new ledger at
    # the same moment (a hub and the ledger process) can meet in a lock SQLite will not wait
    # out (it answers "database is locked" at once): try again, briefly. Once the file is in
    # WAL the pragma takes no lock and passes the first time.
    for attempt in range(WAL_ATTEMPTS):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except Exception as exc:
            if "locked" not in str(exc) or attempt == WAL_ATTEMPTS - 1:
                raise
            time.sleep(0.05)
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across process crashes
    cursor.close()


def _record(
    conn: Connection,
    dialect: str,
    parsed: list[LedgerEvent],
    by_request: dict[str, tuple[str, list[LedgerEvent]]],
    snapshots: dict[str, dict[str, str]],
) -> list[tuple[str, Attribution]]:
    """The transaction of :meth:`Ledger.write`: fold the requests, insert the events and the
    center's record, keep the refused events as conflicts. Returns the request ids whose
    events were (partly) refused, with how they were split, for the log."""
    refused, conflicts = (
        _fold_requests(conn, dialect, by_request, snapshots) if by_request else ([], [])
    )
    refused_keys = {(e.unit, e.stream_id) for e, _ in refused}
    kept = [e for e in parsed if (e.unit, e.stream_id) not in refused_keys]
    if kept:
        conn.execute(
            _insert_ignore(dialect, tables.events),
            [e.row() for e in sorted(kept, key=_event_order)],
        )
        for statement, rows in records.statements(dialect, records.derive(kept)):
            conn.execute(statement, rows)
    if refused:
        conn.execute(
            _insert_ignore(dialect, tables.conflicts),
            [_conflict_row(e, received_at) for e, received_at in refused],
        )
    return conflicts


def _fold_requests(
    conn: Connection,
    dialect: str,
    by_request: dict[str, tuple[str, list[LedgerEvent]]],
    snapshots: dict[str, dict[str, str]],
) -> tuple[list[tuple[LedgerEvent, float]], list[tuple[str, Attribution]]]:
    """Lock the rows (creating the missing ones), fold, write them back. Ids in sorted
    order so that two writers on PostgreSQL lock in the same order (no deadlock).
    Returns the events refused as another request's, each with that request's
    ``received_at``, and the ids they were refused under with their split."""
    ids = sorted(by_request)
    requests = tables.requests
    conn.execute(
        _insert_ignore(dialect, requests),
        [{"id": rid, "unit": by_request[rid][0]} for rid in ids],
    )
    rows = {
        row["id"]: dict(row)
        for row in conn.execute(
            select(requests)
            .where(requests.c.id.in_(ids))
            .order_by(requests.c.id)
            .with_for_update()  # PostgreSQL; SQLite holds the database write lock already
        ).mappings()
    }
    others = _refused_requests(conn, ids)
    folded = []
    refused: list[tuple[LedgerEvent, float]] = []
    conflicts: list[tuple[str, Attribution]] = []
    for rid in ids:
        unit, events = by_request[rid]
        row = rows.get(rid)
        split = attribute(row.get("received_at") if row else None, others.get(rid, ()), events)
        snapshot = snapshots.get(rid)
        folded.append(fold(rid, unit, row, split.own, snapshot if split.owns(snapshot) else None))
        refused += split.refused
        if split.refused:
            conflicts.append((rid, split))
    conn.execute(
        _UPDATE_REQUEST,
        [
            {"b_id": row["id"], **{f"b_{name}": row.get(name) for name in _REQUEST_COLUMNS}}
            for row in folded
        ],
    )
    return refused, conflicts


_REQUEST_COLUMNS = [c.name for c in tables.requests.columns if c.name != "id"]
_UPDATE_REQUEST = (
    update(tables.requests)
    .where(tables.requests.c.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}") for name in _REQUEST_COLUMNS})
)


def _insert_ignore(dialect: str, table: Table) -> Insert:
    """INSERT that skips rows whose unique key exists (the dialect's ON CONFLICT)."""
    return (
        (postgresql if dialect == "postgresql" else sqlite).insert(table).on_conflict_do_nothing()
    )


def _refused_requests(conn: Connection, ids: list[str]) -> dict[str, list[float]]:
    """Request id -> ``received_at`` of the other requests already refused under it."""
    conflicts = tables.conflicts
    rows = conn.execute(
        select(conflicts.c.request_id, conflicts.c.received_at)
        .where(conflicts.c.request_id.in_(ids))
        .distinct()
    )
    refused: dict[str, list[float]] = {}
    for request_id, received_at in rows:
        refused.setdefault(request_id, []).append(received_at)
    return refused


def _conflict_row(event: LedgerEvent, received_at: float) -> dict[str, Any]:
    return event.row() | {"received_at": received_at}


def _unique(events: Iterable[LedgerEvent]) -> list[LedgerEvent]:
    """One event per (unit, stream_id): a takeover may hand an entry over twice."""
    return list({(e.unit, e.stream_id): e for e in events}.values())


def _event_order(event: LedgerEvent) -> tuple[str, str]:
    return event.unit, event.sort_key


def _by_request(events: Iterable[LedgerEvent]) -> dict[str, tuple[str, list[LedgerEvent]]]:
    """Request id -> (its unit, its events)."""
    grouped: dict[str, tuple[str, list[LedgerEvent]]] = {}
    for event_ in events:
        if event_.request_id:
            grouped.setdefault(event_.request_id, (event_.unit, []))[1].append(event_)
    return grouped


async def _read_snapshots(
    redis: Redis,
    by_request: dict[str, tuple[str, list[LedgerEvent]]],
) -> dict[str, dict[str, str]]:
    """The hashes of the requests whose events set static fields (received, deferred).
    A hash that is gone is simply absent: the events' own fields are used instead."""
    wanted = [
        (rid, unit)
        for rid, (unit, events) in by_request.items()
        if any(e.type in SNAPSHOT_EVENTS for e in events)
    ]
    if not wanted:
        return {}
    pipe = redis.pipeline(transaction=False)
    for rid, unit in wanted:
        pipe.hgetall(keys.request(unit, rid))
    results = await pipe.execute()
    return {
        rid: {_text(k): _text(v) for k, v in raw.items()}
        for (rid, _unit), raw in zip(wanted, results, strict=True)
        if raw
    }


def _text(value: bytes | str) -> str:
    """Text of a hash field, without NUL characters (see fold._without_nul)."""
    return (value.decode() if isinstance(value, bytes) else value).replace("\x00", "")


def stop_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop. redis-py (8.1) can lose a
    cancellation that arrives during a pipeline (measured: 4 in 200 cancels of this loop;
    the pipeline returns normally), and a writer that outlives its hub's shutdown keeps
    taking the group's entries into a ledger nobody reads."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
