"""Driving the squad phone app (/phone/) in a browser, for any browser test: a phone's
context (390x844, touch, location allowed at a place), sign-in with a squad's token, going
on duty until the hub sees the squad there, the card of a request, a step's button.

    phone = open_phone(browser, hub.url, "zh", "my-test")   # a fresh context: its own storage
    sign_in(phone, squad); go_on_duty(phone, hub, squad)
    card = card_of(phone, request_id); tap_step(card, "accept")
    phone.shot("offer"); phone.context.close()
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.browser.harness import SIZES, LiveHub, PageWatch, Squad, screenshot_path

XIGONG = (34.670, 112.445)  # central Luoyang
WAIT_MS = 20_000


@dataclass
class Phone:
    """One phone: its page, its browser context (close it when done), the watch over the
    page's console and requests, its language and the test it belongs to (for screenshots)."""

    page: Any
    context: Any
    watch: PageWatch
    lang: str
    test: str

    def shot(self, label: str) -> Path:
        path = screenshot_path(self.test, self.lang, "phone", label)
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def text(self, key: str) -> str:
        return str(self.page.evaluate("(key) => Page.t(key)", key))


def open_phone(
    browser: Any,
    base_url: str,
    lang: str,
    test: str,
    *,
    at: tuple[float, float] = XIGONG,
    permissions: tuple[str, ...] = ("geolocation",),
    zone: str = "Asia/Shanghai",
) -> Phone:
    """The phone app in a fresh browser context (its own IndexedDB), standing at ``at``;
    the page is watched for console errors and failed requests (``phone.watch``)."""
    context = browser.new_context(
        base_url=base_url,
        viewport=SIZES["phone"],
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale="zh-CN" if lang == "zh" else "en-US",
        timezone_id=zone,
        geolocation={"latitude": at[0], "longitude": at[1], "accuracy": 8},
        permissions=list(permissions),
    )
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    watch = PageWatch()
    watch.attach(page)
    page.goto(f"/phone/?lang={lang}")
    return Phone(page, context, watch, lang, test)


def sign_in(phone: Phone, squad: Squad) -> None:
    page = phone.page
    page.fill("#signin-squad", squad.id)
    page.fill("#signin-token", squad.token)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#work:not([hidden])")
    page.wait_for_selector("#link-state[data-state=live]")


def go_on_duty(phone: Phone, hub: LiveHub, squad: Squad) -> None:
    phone.page.click("#duty")
    phone.page.wait_for_selector("#duty[data-on=true]")
    wait_for(lambda: _available(hub, squad), "the hub never saw the squad on duty there")


def _available(hub: LiveHub, squad: Squad) -> bool:
    seen = hub.api("GET", f"/api/v1/squads/{squad.id}")
    return bool(seen["online"] and seen["on_duty"] and seen["position"])


def wait_for(check: Callable[[], Any], message: str, timeout_s: float = 30.0) -> Any:
    """Poll ``check`` (not the page: see :func:`until`) until it returns something true."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.1)


def until(page: Any, expression: str, timeout_s: float = 20.0) -> None:
    """Until ``expression`` is true in the page. (Playwright's wait_for_function polls with
    eval, which the pages' Content-Security-Policy rightly refuses.)"""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"never true: {expression}")
        page.wait_for_timeout(100)


def tap_step(card: Any, step: str) -> None:
    """Tap a step's button on a job's card: accept, enroute, arrive, resolve, defer, dispute
    (the last three open a sheet: fill ``#sheet-text``, then click ``#sheet-submit``)."""
    card.locator(f"button[data-step={step}]").click()


def card_of(phone: Phone, request_id: str) -> Any:
    card = phone.page.locator("article.job", has_text=request_id)
    card.wait_for()
    return card
