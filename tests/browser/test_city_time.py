"""Every clock a page shows is the city's (``[city] timezone``, told to the pages by
``/city.js``), not the zone of the browser's machine: here a browser in New York, 12 or 13
hours behind Luoyang, so no hour of the two zones agrees."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.browser.conftest import CITY_ZONE

AWAY = "America/New_York"
CITY = ZoneInfo(CITY_ZONE)
# 2 a.m. on 1 March in Luoyang is still 28 February in New York: another day, another month.
MOMENT = datetime(2026, 3, 1, 2, 0, tzinfo=CITY)


def assert_city_time(shown: str) -> None:
    """``shown`` ("17:31" or "17:31:05") is the city's time now, give or take two minutes."""
    now = datetime.now(CITY)
    hour, minute = (int(part) for part in shown.strip()[:5].split(":"))
    off_by = (hour * 60 + minute - (now.hour * 60 + now.minute)) % 1440
    assert min(off_by, 1440 - off_by) <= 2, (
        f"{shown!r} is not the time in {CITY_ZONE} ({now:%H:%M})"
    )


def test_the_intake_clock_is_the_citys(pages: Any) -> None:
    page = pages.signed_in("calltaker", "/intake.html", lang="en", zone=AWAY)
    page.clock.set_fixed_time(MOMENT)
    page.wait_for_function("() => document.getElementById('clock').textContent === '02:00:00'")


@pytest.mark.parametrize(("page", "role"), [("center.html", "center"), ("wall.html", "wall")])
def test_the_console_and_the_wall_run_the_citys_clock(pages: Any, page: str, role: str) -> None:
    """Their clocks run on the hub's time: the city's hour of now."""
    opened = pages.signed_in(role, f"/{page}", lang="en", zone=AWAY)
    opened.wait_for_function(
        "() => /^\\d\\d:\\d\\d:\\d\\d$/.test(document.getElementById('clock').textContent)"
    )
    assert_city_time(opened.locator("#clock").inner_text())


def test_the_reports_count_from_the_citys_date_and_show_its_time(pages: Any) -> None:
    page = pages.signed_in("center", "/reports/index.html", lang="en", zone=AWAY)
    page.clock.set_fixed_time(MOMENT)
    page.goto("/reports/evaluation.html")
    # last month of 1 March in the city; New York's date would make it January
    page.wait_for_function("() => document.getElementById('period').textContent === '2026-02'")
    page.wait_for_function("() => document.getElementById('closed').textContent.includes(', ')")
    as_of = page.locator("#closed").inner_text()  # "…as of 02/12/2026, 17:31": the hub's now
    assert_city_time(as_of.rsplit(", ", 1)[1])
