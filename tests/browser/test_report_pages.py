"""The report pages' layout: a table as wide as the monthly evaluation (a unit per row, a
figure per column, 19 columns) scrolls inside its own box, never the whole page."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.harness import LANGS, UNIT_OF_DESK

# A laptop's screen (1366), a small laptop's or a window beside another (1024), a phone's
# (390): the page never scrolls sideways.
WIDTHS = (1366, 1024, 390)


def a_busy_month(route: Any) -> None:
    """The hub's own answer for the month, every unit's figures filled in as a busy month
    fills them (multi-digit counts, times in minutes and hours, notices at several levels)."""
    answer = route.fetch()
    month = answer.json()
    for rank, card in enumerate(month["units"], start=1):
        card.update(
            rank=rank,
            score=87.5,
            score_change=-12.3,
            rank_change=-3,
            requests=1234,
            resolved=1200,
            open=34,
            non_responses=12,
        )
        card["on_time"] = {"accept": 0.987, "arrive": 0.9, "resolve": 1.0}
        spread = {"count": 1200, "p50": 750.0, "p90": 11_160.0}
        card["times"] = {"accept": spread, "arrive": spread, "resolve": spread}
        card["notices"] = {"total": 123, "by_level": {"1": 80, "2": 30, "3": 10, "4": 3}}
        card["disputes"] = {"raised": 12, "upheld": 5, "reassigned": 7}
        card["promises"] = {"kept": 10, "broken": 2}
        card["spot_checks"] = {**card["spot_checks"], "pass_rate": 0.75}
    route.fulfill(response=answer, json=month)


@pytest.mark.parametrize("lang", LANGS)
def test_the_evaluation_table_scrolls_in_its_box_not_the_page(pages: Any, lang: str) -> None:
    page = pages.signed_in("center", "/reports/index.html", lang=lang, size="wall")
    page.route("**/api/v1/reports/evaluation?*", a_busy_month)
    page.goto("/reports/evaluation.html?month=2026-02")
    units = page.locator("#cards tbody tr")
    page.wait_for_function("() => document.querySelectorAll('#cards tbody tr').length > 5")
    assert "1234" in units.first.inner_text()  # the busy month is on the page
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 768})
        page_width, table_width, box_width, box_scrolls = page.evaluate(
            """() => {
              const table = document.querySelector('#cards table');
              const box = table.parentElement;
              return [document.documentElement.scrollWidth, table.offsetWidth, box.clientWidth,
                ['auto', 'scroll'].includes(getComputedStyle(box).overflowX)];
            }"""
        )
        assert page_width <= width, f"at {width} px the page is {page_width} px wide"
        if table_width > box_width:  # wider than the page: all of it is there, in its box
            assert box_scrolls, f"at {width} px the table is cut, not scrolled"


def a_desks_repeat(route: Any) -> None:
    """The hub's own answer for the fortnight, with a repeat location as a unit desk sees it:
    its own two requests listed, two of other units only counted."""
    answer = route.fetch()
    report = answer.json()
    item = {"unit": "water", "received_at": 1_772_400_000.0, "address": "中州路 1号"}
    report["repeats"] = [
        {
            "category": "water_main_burst",
            "lat": 34.67,
            "lon": 112.445,
            "address": "中州路 1号",
            "count": 4,
            "first_at": 1_772_400_000.0,
            "last_at": 1_772_403_600.0,
            "requests": [
                {**item, "id": ident, "link": f"/api/v1/requests/{ident}"}
                for ident in ("20260302-000001", "20260302-000007")
            ],
            "others": 2,
        }
    ]
    route.fulfill(response=answer, json=report)


@pytest.mark.parametrize("lang", LANGS)
def test_a_desks_repeat_location_links_its_own_requests_and_counts_the_others(
    pages: Any, lang: str
) -> None:
    page = pages.signed_in("unit", "/reports/index.html", lang=lang)
    page.route("**/api/v1/reports/fortnight?*", a_desks_repeat)
    page.goto("/reports/fortnight.html?from=2026-03-02")
    cell = page.locator("#repeats tbody tr td").last
    cell.wait_for()
    links = cell.locator("a")
    assert links.all_inner_texts() == ["20260302-000001", "20260302-000007"]
    assert links.first.get_attribute("href") == "/api/v1/requests/20260302-000001"
    assert (
        "另有其他单位 2 件" if lang == "zh" else "and 2 more of other units"
    ) in cell.inner_text()


@pytest.mark.parametrize("role", ["center", "unit"])
def test_a_desk_sees_no_control_it_may_not_use_and_no_other_units_record(
    pages: Any, role: str
) -> None:
    """Closing a month and drawing or recording spot checks are the center's: a unit desk's
    pages do not offer them (they once did, and answered "not allowed" after a confirm). A
    desk asking for another unit's record sees the refusal alone: no chart of its own unit
    beside it, and no other unit in the list."""
    desk = role == "unit"
    page = pages.signed_in(role, "/reports/evaluation.html?month=2026-02", lang="en")
    page.wait_for_function("() => document.getElementById('closed').textContent !== ''")
    assert page.locator("#close").is_visible() is not desk
    pages.shot(page, "evaluation")
    page.goto("/reports/spotchecks.html")
    # filled once the session's answer has decided the form
    page.wait_for_function("() => document.getElementById('checks').childElementCount > 0")
    assert page.locator("#draw").is_visible() is not desk
    pages.shot(page, "spotchecks")
    other = "power" if UNIT_OF_DESK != "power" else "water"
    if desk:  # the hub's refusal is expected here
        pages.watch(page).allow(rf"403.*/units/{other}/record|status of 403")
    page.goto(f"/reports/record.html?unit={other}")
    if desk:
        page.get_by_text("not allowed").wait_for()
        assert page.locator("#trend").is_hidden()
        # The list offers its own unit alone, and names the unit asked (not a blank), which
        # cannot be picked.
        offered = page.locator("#unit option:not([disabled])")
        assert offered.count() == 1 and offered.first.get_attribute("value") == UNIT_OF_DESK
        assert page.eval_on_selector("#unit", "(s) => s.value") == other
        asked = page.eval_on_selector("#unit", "(s) => s.selectedOptions[0].textContent")
        assert (
            asked
            == {
                "power": "State Grid Luoyang Power Supply Company",
                "water": "Luoyang Water Supply Company",
            }[other]
        )
        assert page.locator(f"#unit option[value={other}][disabled]").count() == 1
    else:
        page.locator("#trend").wait_for(state="visible")
        assert page.locator("#unit option").count() > 1
    pages.shot(page, "record-of-another-unit")


@pytest.mark.parametrize("lang", LANGS)
def test_an_empty_past_period_offers_the_current_one(pages: Any, lang: str) -> None:
    """The pages open on the last closed month and week, which a new deployment (or a fresh
    demo) has not filled: an empty past period says so and offers the current one so far."""
    page = pages.signed_in("center", "/reports/evaluation.html?month=2020-01", lang=lang)
    offer = page.locator("#status #to-current")
    offer.wait_for()
    this_month = page.evaluate("() => Reports.thisMonth()")
    assert this_month in offer.inner_text() and this_month > "2020-01"
    pages.shot(page, "evaluation")
    offer.click()
    page.wait_for_function(
        "(month) => document.getElementById('period').textContent === month", arg=this_month
    )
    assert f"month={this_month}" in page.url
    assert page.locator("#month").input_value() == this_month
    assert page.locator("#status #to-current").count() == 0  # the current month: no offer

    page.goto("/reports/spotchecks.html?week=2020-W02")
    offer.wait_for()
    this_week = page.evaluate("() => Reports.thisWeek()")
    assert this_week in offer.inner_text()
    offer.click()
    page.wait_for_function(
        "(week) => document.getElementById('period').textContent === week", arg=this_week
    )
    assert page.locator("#week").input_value() == this_week
    assert page.locator("#status #to-current").count() == 0
