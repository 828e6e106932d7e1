"""The hub's ASGI app in this process, for the app tier of the tests.

:class:`InProcessHub` runs the app's lifespan through the ASGI protocol itself (as uvicorn
does: a ``lifespan`` scope whose ``state`` is copied into every request's scope), so it works
whether the app keeps its services on ``app.state`` or yields them from its lifespan; requests
go through ``httpx.ASGITransport``. No socket, no process: an HTTP check costs a function
call. What needs a real server (the uvicorn edge of ``server/net.py``, WebSockets, several
processes) stays in the system tier.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from server.app import create_app
from server.ledger import Ledger
from server.settings import load_settings

ASGIMessage = dict[str, Any]
LEDGER_FILE = "ledger.sqlite3"
_template: Path | None = None  # this process's empty ledger at the newest revision


async def _migrated_template() -> Path:
    """An empty SQLite ledger migrated to the newest revision, made once per test process.

    Each app's ledger starts as a copy of it: the app still opens it through
    ``Ledger.open`` (which finds it up to date), without running every migration again for
    every test (about 100 ms each). The migrations themselves are tested on their own, from
    an empty database and from older ones (tests/test_ledger_migrations.py)."""
    global _template
    if _template is None:
        folder = tempfile.mkdtemp(prefix="ledger-template-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        path = Path(folder) / LEDGER_FILE
        ledger = await Ledger.open(f"sqlite+aiosqlite:///{path}")
        await ledger.close()
        _template = path
    return _template


class InProcessHub:
    """The app on ``redis_url`` with a SQLite ledger in ``data_dir``; ``settings`` become
    DISPATCH_<NAME> values, as for a hub process."""

    def __init__(
        self, redis_url: str, tokens_env: str, data_dir: Path, settings: Mapping[str, object]
    ) -> None:
        self._ledger_file = data_dir / LEDGER_FILE
        env = {
            "REDIS_URL": redis_url,
            "DISPATCH_TOKENS": tokens_env,
            "DISPATCH_DATA_DIR": str(data_dir),
            "DATABASE_URL": f"sqlite+aiosqlite:///{self._ledger_file}",
        }
        env |= {f"DISPATCH_{name.upper()}": str(value) for name, value in settings.items()}
        self.settings = load_settings(env)
        self.app = create_app(self.settings)
        self.state: dict[str, Any] = {}
        self._to_app: asyncio.Queue[ASGIMessage] = asyncio.Queue()
        self._from_app: asyncio.Queue[ASGIMessage] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The app as a server would call it: each request gets a copy of the lifespan's
        state."""
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": dict(self.state)}
        await self.app(scope, receive, send)

    async def start(self) -> None:
        if not self._ledger_file.exists():  # a new app: its ledger starts empty, migrated
            self._ledger_file.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(await _migrated_template(), self._ledger_file)
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        self._task = asyncio.create_task(self.app(scope, self._to_app.get, self._from_app.put))
        await self._to_app.put({"type": "lifespan.startup"})
        answer = await self._from_app.get()
        if answer["type"] != "lifespan.startup.complete":
            await asyncio.gather(self._task, return_exceptions=True)
            raise RuntimeError(f"the app did not start: {answer.get('message', answer)}")

    async def stop(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._to_app.put({"type": "lifespan.shutdown"})
        await self._from_app.get()
        await self._task

    def client(self) -> httpx.AsyncClient:
        """An HTTP client of this app (client address 127.0.0.1)."""
        transport = httpx.ASGITransport(app=self, client=("127.0.0.1", 50000))
        return httpx.AsyncClient(transport=transport, base_url="http://hub", timeout=30)


@contextlib.asynccontextmanager
async def running(hub: InProcessHub) -> AsyncIterator[InProcessHub]:
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()
