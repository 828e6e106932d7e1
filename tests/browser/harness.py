"""The browser tests' machinery, apart from pytest: a live hub with an account per role, the
chromium to drive and how to launch it, a watch over each page's console and requests, and
where screenshots go.

Playwright drives Debian's ``chromium`` by path (``executable_path``): its own browser
download cannot work on a machine without internet, and is never attempted. ``.ci/run``
installs the package (and ``fonts-noto-cjk``) when it is missing.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from server.launch import HubProc, spawn_hub
from server.store.embedded import EmbeddedRedis

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "server" / "static"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"

# Flags for a headless chromium in a container: no sandbox (root, no user namespaces), no
# GPU, and nothing that reaches the internet by itself.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# The two screen sizes every page is looked at in: a phone and a wall display.
SIZES: dict[str, dict[str, int]] = {
    "phone": {"width": 390, "height": 844},
    "wall": {"width": 1920, "height": 1080},
}
LANGS = ("zh", "en")

ROLES = ("admin", "calltaker", "center", "unit", "wall")
UNIT_OF_DESK = "water"  # the unit whose desk the ``unit`` account is
BOOTSTRAP_TOKENS = {"admin": "browser-admin-token-123456"}


def find_chromium() -> str | None:
    """DISPATCH_CHROMIUM if set, else ``chromium`` (or ``chromium-browser``) on the PATH."""
    configured = os.environ.get("DISPATCH_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass(frozen=True)
class Account:
    role: str
    username: str
    password: str
    unit: str = ""


@dataclass(frozen=True)
class Squad:
    id: str
    unit: str
    name: str
    token: str


@dataclass
class LiveHub:
    """A ``python -m server`` process on its own embedded Redis and SQLite, with one person
    account per role (signed in through the page like a person) and a registered squad."""

    process: HubProc
    redis: EmbeddedRedis
    data_dir: Path
    settings: dict[str, object] = field(default_factory=dict)
    accounts: dict[str, Account] = field(default_factory=dict)
    squad: Squad | None = None
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``"""
        return self.process.http

    @property
    def redis_url(self) -> str:
        return self.redis.url

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {BOOTSTRAP_TOKENS['admin']}"}

    def api(self, method: str, path: str, body: Any = None, *, expect: int | None = None) -> Any:
        """The HTTP API as the admin (bootstrap token); the decoded answer (None for 204).
        ``expect``: the status wanted (default any 2xx), else AssertionError with the body."""
        response = httpx.request(
            method, self.url + path, json=body, headers=self.admin_headers, timeout=15
        )
        ok = response.status_code == expect if expect else response.is_success
        assert ok, f"{method} {path}: {response.status_code} {response.text}"
        return None if response.status_code == 204 else response.json()

    def create_account(self, role: str, username: str, unit: str = "") -> Account:
        password = f"pw-{username}-0123456789"
        body: dict[str, Any] = {
            "username": username,
            "name": f"Browser test {role}",
            "role": role,
            "password": password,
        }
        if unit:
            body["unit"] = unit
        self.api("POST", "/api/v1/accounts", body, expect=201)
        return Account(role, username, password, unit)

    def token(self, role: str) -> str:
        """An API token of the ``role`` account (made on first use), for calls as that person."""
        if role not in self._tokens:
            username = self.accounts[role].username
            answer = self.api(
                "POST", f"/api/v1/accounts/{username}/tokens", {"label": "tests"}, expect=201
            )
            self._tokens[role] = answer["token"]
        return self._tokens[role]

    def call(self, role: str, method: str, path: str, body: Any = None) -> httpx.Response:
        """The HTTP API as the ``role`` account (its API token); the raw answer."""
        headers = {"Authorization": f"Bearer {self.token(role)}"}
        return httpx.request(method, self.url + path, json=body, headers=headers, timeout=15)

    def create_squad(self, unit: str = UNIT_OF_DESK, name: str = "Browser squad") -> Squad:
        answer = self.api("POST", "/api/v1/squads", {"unit": unit, "name": name}, expect=201)
        return Squad(answer["id"], answer["unit"], answer["name"], answer["token"])

    def start_again(self, log_path: Path) -> None:
        """A new hub process in place of the stopped one (``process.stop()``: its sockets
        close with 4000, SERVER_RESTART): same port, Redis, data and settings, so pages and
        phones come back to the same address and find their state (it is all in Redis)."""
        self.process = spawn_hub(
            self.redis_url,
            BOOTSTRAP_TOKENS,
            self.data_dir,
            self.settings,
            port=self.process.port,
            log_path=log_path,
            timeout_s=30,
        )

    def stop(self) -> None:
        self.process.stop()
        self.redis.stop()


def start_live_hub(tmp: Path, **settings: object) -> LiveHub:
    """Start a hub (``settings`` become DISPATCH_<NAME> variables) on a new embedded Redis in
    ``tmp``, create an account per role (``web-<role>``) and register one squad."""
    redis = EmbeddedRedis(tmp / "redis").start()
    try:
        process = spawn_hub(
            redis.url,
            BOOTSTRAP_TOKENS,
            tmp / "var",
            settings,
            log_path=tmp / "hub.log",
            log_level=os.environ.get("HUB_LOG_LEVEL", "warning"),
            timeout_s=30,
        )
    except BaseException:
        redis.stop()
        raise
    hub = LiveHub(process, redis, tmp / "var", dict(settings))
    try:
        for role in ROLES:
            unit = UNIT_OF_DESK if role == "unit" else ""
            hub.accounts[role] = hub.create_account(role, f"web-{role}", unit)
        hub.squad = hub.create_squad()
    except BaseException:
        hub.stop()
        raise
    return hub


@dataclass
class PageWatch:
    """What went wrong on one page: console errors, uncaught exceptions, requests that failed
    or answered 4xx/5xx. ``allow(pattern)``: a problem whose text matches is expected."""

    problems: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.problems.append(f"console: {message.text} ({message.location.get('url', '')})")

    def _failed(self, request: Any) -> None:
        failure = request.failure or ""
        # A request cut short because the page navigated away (sign-in redirect, sign-out)
        # is not a failure of the page.
        if "ERR_ABORTED" in failure:
            return
        self.problems.append(f"request failed: {request.method} {request.url}: {failure}")

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self.problems.append(
                f"HTTP {response.status}: {response.request.method} {response.url}"
            )

    def unexpected(self) -> list[str]:
        return [p for p in self.problems if not any(a.search(p) for a in self.allowed)]


def screenshot_path(test_name: str, lang: str, size: str, label: str = "") -> Path:
    """``test-artifacts/screenshots/<test>[-<label>]-<lang>-<size>.png``"""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name).strip("_")
    if label:
        name += "-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}-{lang}-{size}.png"


def platform_fonts(page: Any, selector: str) -> dict[str, int]:
    """The fonts chromium actually drew the text of ``selector``'s element with: family ->
    glyphs (DevTools protocol ``CSS.getPlatformFontsForNode``). A character no font has is
    drawn as a box from whatever font was tried last, so this tells boxes from text."""
    session = page.context.new_cdp_session(page)
    try:
        session.send("DOM.enable")
        session.send("CSS.enable")
        root = session.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        node = session.send("DOM.querySelector", {"nodeId": root, "selector": selector})
        answer = session.send("CSS.getPlatformFontsForNode", {"nodeId": node["nodeId"]})
        fonts: dict[str, int] = {}
        for font in answer["fonts"]:
            fonts[font["familyName"]] = fonts.get(font["familyName"], 0) + font["glyphCount"]
        return fonts
    finally:
        session.detach()


class Background:
    """An asyncio loop in a thread, for the async parts a browser test drives beside the
    page (the sync Playwright API owns the test's thread): ``background.run(coro)`` waits
    for the coroutine's result there, e.g. a squad's phone from ``dispatch_field.client``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
