"""``python -m server.ledger``: the ledger writer in its own process.

It runs the same consumer as a hub (:meth:`server.ledger.Ledger.consume`): the units' event
streams in Redis -> the SQL ledger, at least once, idempotently. In its own process it takes
no CPU from the hubs' sockets; start it next to the hubs, with the hubs'
``DISPATCH_LEDGER_IN_HUB=0`` (left on, the default, every hub records too: harmless, the
consumers share one group, but the CPU is then spent in the hubs).

It reads the same settings as a hub: ``REDIS_URL`` (required: a hub's embedded Redis is not
reachable from here unless its URL is given), ``DATABASE_URL`` or ``DISPATCH_DATA_DIR`` (the
SQLite file), ``DISPATCH_CONFIG`` (the city, for its units), ``DISPATCH_LIVE_RETENTION_H``
(drop closed requests' live state from Redis once recorded: server.ledger.retention). The
schema is migrated at start (server/ledger/migrations). Several may run at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

from server.city import load_city
from server.cli import start
from server.directory import Directory
from server.ledger.running import ledger_loops
from server.ledger.writer import Ledger, default_database_url
from server.settings import Settings
from server.store.cluster import open_client

log = logging.getLogger("server.ledger")

DIRECTORY_REFRESH_S = 5.0  # units added through the API are recorded from then on


async def run(settings: Settings, consumer: str) -> None:
    """Record until cancelled (SIGTERM or SIGINT)."""
    assert settings.redis_url is not None
    redis, _ = open_client(settings.redis_url, settings)
    ledger = await Ledger.open(settings.database_url or default_database_url(settings.data_dir))
    directory = Directory(redis, load_city(settings.config_path))
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)

    async def refresh() -> None:
        while True:
            with contextlib.suppress(Exception):  # Redis away: the consumer logs it
                await directory.refresh()
            await asyncio.sleep(DIRECTORY_REFRESH_S)

    refresher = asyncio.create_task(refresh())
    log.info("ledger writer %s recording", consumer)
    try:
        await asyncio.gather(*ledger_loops(ledger, redis, directory.unit_codes, consumer, settings))
    except asyncio.CancelledError:
        log.info("ledger writer %s stopping", consumer)
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        await ledger.close()
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m server.ledger",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    started = start(parser, argv)
    if started is None:
        return 2
    _, settings = started
    if not settings.redis_url:
        print("error: REDIS_URL is required (the Redis the hubs use)", file=sys.stderr)
        return 2
    asyncio.run(run(settings, f"ledger-{socket.gethostname()}-{os.getpid()}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
