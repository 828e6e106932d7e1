"""Driving the intake console (/intake.html) by keyboard alone, for any browser test: open it
signed in as the call-taker, type at a typist's pace, fill a whole call (number, category,
description, place) and a caller's number no other test of the session uses.

    page = open_intake(pages, "zh")
    fill_by_keyboard(page, caller_number(), "gs", "水管爆了", "wcgy")
    page.keyboard.press("Control+Enter"); page.wait_for_selector("#result:not([hidden])")
"""

from __future__ import annotations

import itertools
from typing import Any

# A typist's pace: 150 keys a minute.
KEY_DELAY_MS = 80
_numbers = itertools.count(1)


def caller_number() -> str:
    """A caller's number no other test of the session uses."""
    return f"1390000{next(_numbers):04d}"


def open_intake(pages: Any, lang: str) -> Any:
    """The console at the wall's size, signed in as the call-taker, its map drawn and the
    focus on the caller's number (ready to type)."""
    page = pages.signed_in("calltaker", "/intake.html", lang=lang, size="wall")
    page.wait_for_function("() => document.querySelectorAll('.district-label').length > 0")
    assert page.evaluate("document.activeElement.id") == "phone"
    return page


def type_keys(page: Any, text: str) -> None:
    page.keyboard.type(text, delay=KEY_DELAY_MS)


def fill_by_keyboard(page: Any, phone: str, category: str, description: str, place: str) -> None:
    """number, Tab, category query, Tab (takes the first match), description, Tab, place
    query, Enter (takes the first place; focus goes to the send button)."""
    type_keys(page, phone)
    page.keyboard.press("Tab")
    type_keys(page, category)
    page.keyboard.press("Tab")
    type_keys(page, description)
    page.keyboard.press("Tab")
    type_keys(page, place)
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.activeElement.id === 'send'")
