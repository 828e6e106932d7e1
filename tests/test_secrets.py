"""Secrets and data: security headers, pages behind sign-in and fit for the CSP, health
details only to the center, no query string in the access log, a Redis with a password and
private files."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
import redis as redis_sync

from server.launch import spawn_hub
from server.log_filters import DropQueryStrings, without_query
from server.security_headers import CONTENT_SECURITY_POLICY
from server.store.embedded import EmbeddedRedis
from server.web import static_dir
from tests.conftest import TOKENS, Hubs
from tests.helpers import auth

SECURITY = {
    "referrer-policy": "no-referrer",
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture
def hubs(embedded_redis: EmbeddedRedis, tmp_path: Path) -> Iterator[Hubs]:
    client = redis_sync.Redis.from_url(embedded_redis.url)
    client.flushdb()
    client.close()
    manager = Hubs(embedded_redis.url, tmp_path)
    yield manager
    for hub in manager.started:
        hub.stop()


@pytest.fixture
async def http(app: httpx.AsyncClient) -> httpx.AsyncClient:
    """Headers, pages and health are the app's answers: the app in process is enough."""
    return app


async def _session(http: httpx.AsyncClient, role: str = "wall") -> dict[str, str]:
    """A signed-in browser's cookie header, for a new account of ``role``."""
    username = f"{role}-browser"
    created = await http.post(
        "/api/v1/accounts",
        headers=auth("admin"),
        json={"username": username, "name": "Browser", "role": role, "password": "a long password"},
    )
    assert created.status_code == 201, created.text
    signed_in = await http.post(
        "/api/v1/session", json={"username": username, "password": "a long password"}
    )
    http.cookies.clear()
    return {"Cookie": f"ld_session={signed_in.cookies['ld_session']}"}


# ---- headers, pages -----------------------------------------------------------------------


async def test_every_answer_carries_the_security_headers(http: httpx.AsyncClient) -> None:
    answers = {
        "page": await http.get("/signin.html"),
        "asset": await http.get("/wall.js"),
        "api": await http.get("/api/v1/health"),
        "api error": await http.get("/api/v1/units"),
        "not found": await http.get("/api/v1/nothing-here"),
        "redirect": await http.get("/wall.html"),
    }
    assert [a.status_code for a in answers.values()] == [200, 200, 200, 401, 404, 303]
    for name, answer in answers.items():
        for header, value in SECURITY.items():
            assert answer.headers.get(header) == value, (name, header)


async def test_pages_need_a_session_assets_do_not(http: httpx.AsyncClient) -> None:
    for page in ("/wall.html", "/", "/index.html", "/wall.html?lang=en"):
        answer = await http.get(page)
        assert answer.status_code == 303, page
        target = answer.headers["location"]
        assert target.startswith("/signin.html?next=")
        assert httpx.URL(target).params["next"] == page
    # A bearer token is for programs: a page still wants the browser's session.
    assert (await http.get("/wall.html", headers=auth("wall"))).status_code == 303
    for public in (
        "/signin.html",
        "/signin.js",
        "/signin.css",
        "/wall.js",
        "/wall.css",
        "/vendor/leaflet/leaflet.js",
    ):
        assert (await http.get(public)).status_code == 200, public
    cookie = await _session(http)
    assert (await http.get("/wall.html", headers=cookie)).status_code == 200
    assert (await http.get("/", headers=cookie)).status_code == 200
    # The wall's own calls work with the cookie alone.
    assert (await http.get("/api/v1/map", headers=cookie)).status_code == 200
    out = await http.delete("/api/v1/session", headers=cookie)
    assert out.status_code == 204
    assert (await http.get("/wall.html", headers=cookie)).status_code == 303


class _PageScan(HTMLParser):
    """What the CSP would refuse in a page: inline scripts and styles, style attributes,
    event handler attributes, resources from elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.resources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for name, _value in attrs:
            if name == "style" or name.startswith("on"):
                self.problems.append(f"<{tag} {name}=…>")
        if tag == "style":
            self.problems.append("<style>")
        if tag == "script" and not named.get("src"):
            self.problems.append("inline <script>")
        for name in ("src", "href"):
            link = named.get(name)
            if link and (tag in ("script", "img") or (tag == "link" and name == "href")):
                self.resources.append(link)
                if re.match(r"^[a-z]+:|^//", link):
                    self.problems.append(f"external {link}")


async def test_pages_load_under_the_content_security_policy(http: httpx.AsyncClient) -> None:
    """No browser here: check every page for what the CSP blocks, and that every resource it
    names is served by the hub."""
    cookie = await _session(http)
    pages = sorted(static_dir().glob("*.html"))
    assert {p.name for p in pages} >= {"index.html", "wall.html", "signin.html"}
    for page in pages:
        scan = _PageScan()
        scan.feed(page.read_text())
        assert scan.problems == [], page.name
        for resource in scan.resources:
            served = await http.get("/" + resource.lstrip("/"), headers=cookie)
            assert served.status_code == 200, (page.name, resource)
    for script in static_dir().glob("*.js"):
        # HTML built by the pages' scripts (Leaflet tooltips, icons) has no style attribute.
        assert not re.search(r"style\s*=\s*['\"\\]", script.read_text()), script.name
        assert "token=" not in script.read_text() and "localStorage.setItem(TOKEN" not in (
            script.read_text()
        )


# ---- health -------------------------------------------------------------------------------


async def test_health_tells_details_only_to_admin_and_center(http: httpx.AsyncClient) -> None:
    anonymous = await http.get("/api/v1/health")
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ok"}
    assert socket.gethostname() not in anonymous.text
    assert (await http.get("/api/v1/health", headers=auth("calltaker"))).json() == {"status": "ok"}
    for role in ("center", "admin"):
        detailed = (await http.get("/api/v1/health", headers=auth(role))).json()
        assert detailed["hub"].startswith(socket.gethostname()), role
        assert {"redis", "squads_connected", "positions_written"} <= set(detailed)
    center = await _session(http, "center")
    assert "hub" in (await http.get("/api/v1/health", headers=center)).json()


# ---- logs ---------------------------------------------------------------------------------


def test_the_query_filter_keeps_the_path_and_drops_the_query() -> None:
    assert without_query("/wall.html?token=secret") == "/wall.html?…"
    assert without_query("/api/v1/health") == "/api/v1/health"
    assert without_query(200) == 200
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/a?token=x", "1.1", 200),
        None,
    )
    assert DropQueryStrings().filter(record) and "token" not in record.getMessage()


async def test_the_access_log_never_shows_a_query_string(hubs: Hubs, tmp_path: Path) -> None:
    log_path = tmp_path / "hub-access.log"
    hub = spawn_hub(
        hubs.redis_url, TOKENS, tmp_path / "var", log_path=log_path, log_level="info", timeout_s=20
    )
    hubs.started.append(hub)
    async with httpx.AsyncClient(base_url=hub.http, timeout=10) as http:
        for path in (
            "/api/v1/health?token=secret-in-url",
            "/wall.html?token=secret-in-url",
            "/api/v1/units?token=secret-in-url&x=1",
        ):
            await http.get(path)
    hub.stop()
    log = log_path.read_text()
    assert "/api/v1/health?…" in log and '"GET /wall.html?… HTTP/1.1" 303' in log
    assert "secret-in-url" not in log


# ---- Redis and files ----------------------------------------------------------------------


def _raw_redis(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
        conn.sendall(command)
        return conn.recv(200)


@pytest.mark.redis
def test_embedded_redis_wants_its_password_and_keeps_its_files_private(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "redis"
    server = EmbeddedRedis(data_dir).start()
    try:
        assert _raw_redis(server.port, b"PING\r\n").startswith(b"-NOAUTH")
        assert _raw_redis(server.port, b"AUTH wrong\r\n").startswith(b"-")
        with pytest.raises(redis_sync.AuthenticationError):
            redis_sync.Redis(port=server.port, protocol=2).set("k", "v")
        client = redis_sync.Redis.from_url(server.url)
        assert client.set("k", "v")
        client.close()
        assert server.password and server.password not in server.public_url
        assert server.password not in " ".join(server.process.args)  # type: ignore[union-attr]
        assert _mode(data_dir) == 0o700
        files = sorted(p.name for p in data_dir.iterdir())
        assert {"appendonly.aof", "redis.log", "redis.password"} <= set(files)
        assert all(_mode(data_dir / name) == 0o600 for name in files), files
    finally:
        server.stop()
    # Restarted on the same data: the same password, so clients with the URL reconnect.
    again = EmbeddedRedis(data_dir, port=server.port).start()
    try:
        assert again.url == server.url
    finally:
        again.stop()


@pytest.mark.system
def test_a_hub_with_its_own_redis_logs_no_password_and_keeps_data_private(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "var"
    log_path = tmp_path / "hub.log"
    hub = spawn_hub("", TOKENS, data_dir, log_path=log_path, timeout_s=30)  # no REDIS_URL
    try:
        assert (httpx.get(f"{hub.http}/api/v1/units", headers=auth("center"))).status_code == 200
    finally:
        hub.stop()
    log = log_path.read_text()
    password = (data_dir / "redis" / "redis.password").read_text().strip()
    assert "embedded Redis 6.2 at redis://127.0.0.1:" in log
    assert password not in log
    assert _mode(data_dir) == 0o700 and _mode(data_dir / "redis") == 0o700
    ledger_files = sorted(data_dir.glob("ledger.sqlite3*"))
    assert ledger_files and all(_mode(f) == 0o600 for f in ledger_files), ledger_files
    assert all(_mode(f) == 0o600 for f in (data_dir / "redis").iterdir())
