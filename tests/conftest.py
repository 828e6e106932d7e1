"""Fixtures: a real Redis (the embedded 6.2 from the installed package, and the system's
Redis 7 on a spare database when one answers on 6379), the app in process, and real hub
processes.

Integration tests take ``redis_url``; they run once per reachable Redis version, and once on
a Redis Cluster of three masters with a replica each (``redis6.2-cluster``: the packaged
redis-server, six processes, started once per session; flushed on every master between
tests). A test that addresses one server by nature (DEBUG, CLIENT KILL, the single pool)
skips itself there with :func:`skip_on_cluster`.

Every test belongs to one tier, marked by :func:`pytest_collection_modifyitems` from the
fixtures it uses (an explicit ``@pytest.mark.<tier>`` wins):

* ``pure``: none of the fixtures below; logic over plain data (and files of the checkout).
* ``app``: the ASGI app in this process (``app``, ``apps``), on the embedded Redis.
* ``redis``: integration against a real Redis or database (``redis``, ``redis_url``,
  ``embedded_redis``, the ledger's and accounts' database fixtures).
* ``system``: real hub processes (``hubs``), several processes, the load test.
* ``browser``: a real browser on a live hub (``live_hub``, ``browser``, ``pages``,
  ``signed_in``, ``shot``: see tests/browser/conftest.py).

``python3 dev.py test --fast`` runs ``pure or app``; ``python3 dev.py test`` runs them all.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis as redis_sync
from redis.asyncio import Redis

from server.launch import HubProc, spawn_hub
from server.ledger import Ledger, default_database_url
from server.settings import Settings
from server.store.cluster import open_client, wants_cluster
from server.store.embedded import EmbeddedRedis
from server.store.embedded_cluster import EmbeddedCluster
from tests.inprocess import InProcessHub

ROOT = Path(__file__).resolve().parents[1]
# Spare databases of the machine's Redis 7 (never db 0, which is someone else's): a test run
# claims one of them for itself, so runs at the same moment (CI, a developer, a second
# checkout) never flush each other's keys. The claims live in CLAIMS_DB, each with a lease
# that the run renews and gives back at its end (a killed run's lapses on its own).
SYSTEM_REDIS_DBS = range(8, 15)
CLAIMS_DB = 15
CLAIM_LEASE_S = 120
TOKENS = {
    "admin": "admin-token-123456",
    "calltaker": "calltaker-token-123456",
    "center": "center-token-123456",
    "wall": "wall-token-123456",
}
TOKENS_ENV = ",".join(f"{role}:{token}" for role, token in TOKENS.items())


class _SystemRedis:
    """The machine's Redis 7, when one answers on 6379: one spare database, claimed."""

    def __init__(self) -> None:
        self.url: str | None = None
        self.reason = "no Redis 7 reachable on 127.0.0.1:6379"
        self._claims: redis_sync.Redis | None = None
        self._key = ""
        self._token = os.urandom(8).hex()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def claim(self) -> None:
        try:
            claims = redis_sync.Redis(port=6379, db=CLAIMS_DB, socket_connect_timeout=0.3)
            version = claims.info("server")["redis_version"]
        except Exception:  # noqa: BLE001 - not reachable: those runs are skipped
            return
        if int(version.split(".")[0]) < 7:
            self.reason = f"the Redis on 127.0.0.1:6379 is {version}, not 7"
            return
        for db in SYSTEM_REDIS_DBS:
            key = f"dispatch-tests:claim:{db}"
            if claims.set(key, self._token, nx=True, ex=CLAIM_LEASE_S):
                self._claims, self._key = claims, key
                self.url = f"redis://127.0.0.1:6379/{db}"
                self._renewer = threading.Thread(target=self._renew, daemon=True)
                self._renewer.start()
                return
        self.reason = (
            f"every spare database of the Redis 7 on 6379 ({SYSTEM_REDIS_DBS}) is claimed by "
            "another run"
        )

    def _renew(self) -> None:
        while not self._stop.wait(CLAIM_LEASE_S / 4):
            assert self._claims is not None
            with contextlib.suppress(Exception):
                self._claims.expire(self._key, CLAIM_LEASE_S)

    def release(self) -> None:
        self._stop.set()
        if self._claims is not None:
            with contextlib.suppress(Exception):
                if self._claims.get(self._key) == self._token.encode():
                    self._claims.delete(self._key)
            self._claims.close()


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def system_redis() -> Iterator[_SystemRedis]:
    system = _SystemRedis()
    system.claim()
    yield system
    system.release()


_CLUSTERS: dict[str, EmbeddedCluster] = {}  # url -> the session's cluster (to flush it)


@pytest.fixture(scope="session")
def embedded_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    """Three masters, each with a replica (Redis 6.2, the packaged binary)."""
    cluster = EmbeddedCluster(tmp_path_factory.mktemp("cluster")).start()
    _CLUSTERS[cluster.url] = cluster
    yield cluster
    _CLUSTERS.pop(cluster.url, None)
    cluster.stop()


@pytest.fixture(scope="session", params=["redis6.2-embedded", "redis7-system", "redis6.2-cluster"])
def redis_base_url(request: pytest.FixtureRequest, embedded_redis: EmbeddedRedis) -> str:
    if request.param == "redis6.2-embedded":
        return embedded_redis.url
    if request.param == "redis6.2-cluster":
        cluster: EmbeddedCluster = request.getfixturevalue("embedded_cluster")
        return cluster.url
    system: _SystemRedis = request.getfixturevalue("system_redis")
    if system.url is None:
        pytest.skip(system.reason)
    return system.url


def is_cluster_url(url: str) -> bool:
    return wants_cluster(url, Settings())


def skip_on_cluster(url: str, reason: str) -> None:
    """Skip the test, visibly, when ``url`` is a Redis Cluster: it addresses one server."""
    if is_cluster_url(url):
        pytest.skip(f"single Redis only: {reason}")


def flush(url: str) -> None:
    """Empty the Redis of ``url``: its database, or every master of the cluster."""
    cluster = _CLUSTERS.get(url)
    if cluster is not None:
        cluster.wait_healthy()  # a test that killed a master left it failing over
        cluster.flush()
        return
    client = redis_sync.Redis.from_url(url)
    client.flushdb()
    client.close()


def redis_client(url: str) -> Redis:
    """An asyncio client of ``url`` (a cluster client for a cluster URL)."""
    return open_client(url, Settings())[0]


@pytest.fixture
def redis_url(redis_base_url: str) -> str:
    """A clean database for each test."""
    flush(redis_base_url)
    return redis_base_url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = redis_client(redis_url)
    yield client
    await client.aclose()


HubProcess = HubProc  # the tests' name for one hub process


@dataclass
class Hubs:
    """Hub processes on the test's Redis, stopped when the test ends."""

    redis_url: str
    tmp: Path
    started: list[HubProc] = field(default_factory=list)

    def start(self, **settings: object) -> HubProc:
        """Start a hub process; ``settings`` become DISPATCH_<NAME> variables. It stops at
        once when asked (no drain wait or spread) unless ``settings`` say otherwise."""
        settings = {"drain_wait_s": 0, "drain_spread_s": 0, **settings}
        log_path = self.tmp / f"hub-{len(self.started)}.log"
        hub = spawn_hub(
            self.redis_url,
            TOKENS,
            self.tmp / "var",
            settings,
            log_path=log_path,
            log_level=os.environ.get("HUB_LOG_LEVEL", "warning"),
            timeout_s=20,
        )
        self.started.append(hub)
        return hub


@pytest.fixture
def hubs(redis_url: str, tmp_path: Path) -> Iterator[Hubs]:
    manager = Hubs(redis_url, tmp_path)
    yield manager
    for hub in manager.started:
        hub.stop()


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


# ---- the app in process ---------------------------------------------------------------------


@dataclass
class Apps:
    """Apps in this process on the embedded Redis (flushed for each test), each with its own
    SQLite ledger; stopped when the test ends."""

    redis_url: str
    tmp: Path
    started: list[InProcessHub] = field(default_factory=list)
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    async def start(self, **settings: object) -> httpx.AsyncClient:
        """Start an app (``settings`` become DISPATCH_<NAME> values); its HTTP client."""
        hub = InProcessHub(
            self.redis_url, TOKENS_ENV, self.tmp / f"app-{len(self.started)}", settings
        )
        await hub.start()
        self.started.append(hub)
        client = hub.client()
        self.clients.append(client)
        return client


@pytest.fixture
async def apps(embedded_redis: EmbeddedRedis, tmp_path: Path) -> AsyncIterator[Apps]:
    client = redis_sync.Redis.from_url(embedded_redis.url)
    client.flushdb()
    client.close()
    manager = Apps(embedded_redis.url, tmp_path)
    yield manager
    for http in manager.clients:
        await http.aclose()
    for hub in reversed(manager.started):
        await hub.stop()


@pytest.fixture
async def app(apps: Apps) -> httpx.AsyncClient:
    """An HTTP client of the app in process, with the default settings and TOKENS."""
    return await apps.start()


@pytest.fixture
async def app_redis(apps: Apps) -> AsyncIterator[Redis]:
    """The app's Redis (the embedded one), to look at what a request left behind."""
    client = Redis.from_url(apps.redis_url)
    yield client
    await client.aclose()


# ---- test tiers -------------------------------------------------------------------------------

TIERS = ("pure", "app", "redis", "system", "browser")
# The first tier whose fixtures a test uses is its tier; a test using none is pure.
TIER_FIXTURES = (
    (
        "browser",
        {"live_hub", "browser", "playwright", "chromium_executable", "pages", "signed_in", "shot"},
    ),
    ("system", {"hubs"}),
    ("app", {"app", "apps", "app_redis"}),
    (
        "redis",
        {
            "redis",
            "redis_url",
            "redis_base_url",
            "embedded_redis",
            "embedded_cluster",
            "database_url",
            "ledger",
            "store",
        },
    ),
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(tier) for tier in TIERS):
            continue
        names = set(getattr(item, "fixturenames", ()))
        tier = next((tier for tier, fixtures in TIER_FIXTURES if names & fixtures), "pure")
        item.add_marker(getattr(pytest.mark, tier))
    # The browser tier last: Playwright's sync driver (session-scoped) leaves its event loop
    # set as the main thread's running loop, and pytest-asyncio cannot run a test after it.
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


# ---- the ledger's database: SQLite and PostgreSQL ----------------------------------------------

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A SQLite file in tmp_path, or a fresh PostgreSQL database dropped afterwards (the test
    skips, saying why, where no PostgreSQL answers)."""
    if request.param == "sqlite":
        yield default_database_url(tmp_path / "var")
        return
    try:
        admin = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        pytest.skip("no PostgreSQL reachable on 127.0.0.1:5432")
    name = f"dispatch_test_{secrets.token_hex(6)}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        # The plain form, as DATABASE_URL would give it: the ledger picks asyncpg itself.
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    opened = await Ledger.open(database_url)
    yield opened
    await opened.close()
