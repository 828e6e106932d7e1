"""Browser test fixtures (the ``browser`` tier: ``dev.py test`` runs them, ``--fast`` not).

* ``live_hub``: one hub process for the session on its own embedded Redis and SQLite, with an
  account per role (``live_hub.accounts[role]``: admin, calltaker, center, unit (the water
  unit's desk), wall) and a registered squad (``live_hub.squad``: id, unit, token).
  ``live_hub.api(method, path, body)`` calls the API as the admin (decoded answer),
  ``live_hub.call(role, method, path, body)`` as that role's account (the raw answer);
  ``live_hub.create_squad(unit, name)`` registers another squad. A module that needs other
  settings defines its own ``live_hub`` fixture (scope="module") with
  ``start_live_hub(tmp, time_scale=0.01, ...)``: ``pages`` then uses that hub.
* ``background``: an asyncio loop in a thread for async helpers beside the page
  (``background.run(FieldClient(...).start())``: a squad's phone from dispatch_field).
* ``browser``: headless Debian chromium driven by Playwright (sync API); skipped, with the
  reason, where no chromium can be found. ``playwright``: the session's driver, to launch
  a browser with other options (``chromium_executable`` is its path).
* ``pages``: opens pages, each in a fresh browser context (its own cookies and storage) at
  a size (``"phone"`` 390x844 or ``"wall"`` 1920x1080) and a language (``"zh"``/``"en"``),
  on a machine set to the city's time zone unless ``zone=`` names another:
  ``pages.signed_in(role, path, lang=, size=, zone=)`` signs in through /signin.html like a
  person and lands on ``path``; ``pages.anonymous(path, ...)`` opens without a session;
  ``pages.shot(page, label, full_page=False)`` saves
  test-artifacts/screenshots/<test>[-params][-label]-<lang>-<size>.png;
  ``pages.watch(page).allow(regex)`` lets an expected error through;
  ``pages.phone_app(lang, at=(lat, lon))`` opens the squad phone app (a ``Phone`` of
  tests/browser/phone_app.py) in a phone context of its own, watched like the rest;
  ``pages.resize(page, size)`` looks at a page at the other size.
  ``signed_in`` and ``shot`` are the same functions as fixtures of their own.
* Every page opened is watched: a console error, an uncaught exception, a failed request or
  a 4xx/5xx answer fails the test (at teardown) unless allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.harness import (
    CHROMIUM_ARGS,
    SIZES,
    Background,
    LiveHub,
    PageWatch,
    find_chromium,
    screenshot_path,
    start_live_hub,
)
from tests.browser.phone_app import XIGONG, Phone, open_phone

SIGN_IN_TIMEOUT_MS = 15_000
CITY_ZONE = "Asia/Shanghai"  # server/city/luoyang.toml's [city] timezone


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip(
            "no chromium: `apt-get install chromium fonts-noto-cjk` (.ci/run does) "
            "or set DISPATCH_CHROMIUM to a chromium binary"
        )
    return path


@pytest.fixture(scope="session")
def live_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    hub = start_live_hub(tmp_path_factory.mktemp("live-hub"))
    yield hub
    hub.stop()


@pytest.fixture(scope="session")
def background() -> Iterator[Background]:
    runner = Background()
    yield runner
    runner.stop()


@pytest.fixture(scope="session")
def playwright(chromium_executable: str) -> Iterator[Any]:
    """The one Playwright driver of the session (a second sync driver cannot start while
    one runs): launch other browsers from it (``playwright.chromium.launch(...)``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Any, chromium_executable: str) -> Iterator[Any]:
    chromium = playwright.chromium.launch(
        executable_path=chromium_executable, args=list(CHROMIUM_ARGS), headless=True
    )
    yield chromium
    chromium.close()


@dataclass
class Opened:
    page: Any
    context: Any
    watch: PageWatch
    lang: str
    size: str


@dataclass
class Pages:
    """Pages opened by one test; see the module docstring."""

    browser: Any
    hub: LiveHub
    test_name: str
    opened: list[Opened] = field(default_factory=list)

    def _new(self, lang: str, size: str, zone: str = CITY_ZONE) -> Opened:
        if size not in SIZES:
            raise ValueError(f"size {size!r}: one of {', '.join(SIZES)}")
        phone = size == "phone"
        context = self.browser.new_context(
            base_url=self.hub.url,
            viewport=SIZES[size],
            locale="zh-CN" if lang == "zh" else "en-US",
            timezone_id=zone,
            is_mobile=phone,
            has_touch=phone,
        )
        page = context.new_page()
        page.set_default_timeout(SIGN_IN_TIMEOUT_MS)
        opened = Opened(page, context, PageWatch(), lang, size)
        opened.watch.attach(page)
        self.opened.append(opened)
        return opened

    def anonymous(
        self, path: str = "/", *, lang: str = "zh", size: str = "wall", zone: str = CITY_ZONE
    ) -> Any:
        """``path`` (with ``?lang=``) in a fresh context without a session."""
        opened = self._new(lang, size, zone)
        opened.page.goto(with_lang(path, lang))
        return opened.page

    def signed_in(
        self,
        role: str,
        path: str = "/",
        *,
        lang: str = "zh",
        size: str = "wall",
        zone: str = CITY_ZONE,
    ) -> Any:
        """Open ``path`` in a fresh context as a person would: sent to the sign-in page,
        type the ``role`` account's username and password, press Enter, land on ``path``."""
        opened = self._new(lang, size, zone)
        page = opened.page
        page.goto(with_lang(path, lang))
        assert urlsplit(page.url).path == "/signin.html", f"{path} did not ask to sign in"
        self.type_sign_in(page, role)
        wanted = urlsplit(path).path
        page.wait_for_url(lambda url: urlsplit(url).path == wanted)
        page.wait_for_load_state("load")
        return page

    def type_sign_in(self, page: Any, role: str) -> None:
        """On the sign-in page: the ``role`` account's username and password, then Enter."""
        account = self.hub.accounts[role]
        page.fill("#username", account.username)
        page.fill("#password", account.password)
        page.press("#password", "Enter")

    def phone_app(
        self, lang: str = "zh", *, at: tuple[float, float] = XIGONG, **options: Any
    ) -> Phone:
        """The squad phone app (/phone/) in a fresh phone context standing at ``at``, with
        location allowed (tests/browser/phone_app.py: sign it in, go on duty); watched, shot
        and closed like the other pages."""
        phone = open_phone(self.browser, self.hub.url, lang, self.test_name, at=at, **options)
        self.opened.append(Opened(phone.page, phone.context, phone.watch, lang, "phone"))
        return phone

    def resize(self, page: Any, size: str) -> None:
        """Look at ``page`` at another of the SIZES (the window only: a phone context stays a
        touch device); its screenshots are named after the new size."""
        opened = self._find(page)
        page.set_viewport_size(SIZES[size])
        opened.size = size

    def watch(self, page: Any) -> PageWatch:
        return self._find(page).watch

    def shot(self, page: Any, label: str = "", *, full_page: bool = False) -> Path:
        """A screenshot of ``page``'s window (``full_page``: the whole scrolled page) as an
        artifact; its path."""
        opened = self._find(page)
        path = screenshot_path(self.test_name, opened.lang, opened.size, label)
        page.screenshot(path=str(path), full_page=full_page)
        return path

    def _find(self, page: Any) -> Opened:
        for opened in self.opened:
            if opened.page is page:
                return opened
        raise ValueError("not a page opened by this test's `pages`")

    def close(self) -> list[str]:
        """Close every context; the problems nobody allowed, per page."""
        problems: list[str] = []
        for opened in self.opened:
            for problem in opened.watch.unexpected():
                problems.append(f"[{opened.lang}/{opened.size} {opened.page.url}] {problem}")
            opened.context.close()
        self.opened.clear()
        return problems


def with_lang(path: str, lang: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}lang={lang}"


def _artifact_name(node: Any) -> str:
    """The test's name and its parameters but ``lang`` and ``size`` (the screenshot's name
    ends with those anyway): ``test_a_page_loads_cleanly-wall.html``."""
    callspec = getattr(node, "callspec", None)
    params = callspec.params if callspec else {}
    extra = [str(v) for k, v in params.items() if k not in ("lang", "size")]
    return "-".join([node.originalname, *extra])


@pytest.fixture
def pages(browser: Any, live_hub: LiveHub, request: pytest.FixtureRequest) -> Iterator[Pages]:
    opened = Pages(browser, live_hub, _artifact_name(request.node))
    yield opened
    problems = opened.close()
    if problems:
        pytest.fail("problems on the pages:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def signed_in(pages: Pages) -> Callable[..., Any]:
    return pages.signed_in


@pytest.fixture
def shot(pages: Pages) -> Callable[..., Path]:
    return pages.shot
