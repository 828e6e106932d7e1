"""The squads page: a unit desk looks after its own squads and replaces a lost phone's token,
the admin registers a squad, the center reads; a token is shown once, on the page only."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.browser.harness import LANGS, UNIT_OF_DESK, LiveHub


def _field_me(hub: LiveHub, squad: str, token: str) -> int:
    """The status of the field API's ``me`` with a squad's credentials, as its phone calls it."""
    basic = base64.b64encode(f"{squad}:{token}".encode()).decode()
    answer = httpx.get(
        f"{hub.url}/api/v1/field/me", headers={"Authorization": f"Basic {basic}"}, timeout=15
    )
    return answer.status_code


def _row(page: Any, squad: str) -> Any:
    return page.locator(f"#roster tbody tr[data-squad='{squad}']")


@pytest.mark.parametrize("lang", LANGS)
def test_a_desk_replaces_a_lost_phones_token(pages: Any, live_hub: LiveHub, lang: str) -> None:
    lost = live_hub.create_squad(UNIT_OF_DESK, f"Lost phone {lang}")
    page = pages.signed_in("unit", "/squads.html", lang=lang, size="wall")
    row = _row(page, lost.id)
    row.wait_for()
    assert page.locator("#unit").is_disabled()  # a desk sees its own unit only
    assert page.locator("#unit option").count() == 1
    assert page.locator("#register").is_hidden()  # registering is the admin's
    units = {r["unit"] for r in live_hub.call("unit", "GET", "/api/v1/squads").json()}
    assert units == {UNIT_OF_DESK}
    assert ("离线" if lang == "zh" else "offline") in row.inner_text()

    row.locator("button").click()  # asks first, naming the squad
    assert page.locator("#secret").is_hidden()
    assert _field_me(live_hub, lost.id, lost.token) == 200
    ask = page.locator(f"#roster tr[data-confirm='{lost.id}']")
    assert lost.name in ask.inner_text() and lost.id in ask.inner_text()
    ask.locator("button.danger").click()
    page.locator("#secret").wait_for()
    shown = page.locator("#secret-token").inner_text()  # in groups of four, to read out
    token = shown.replace(" ", "")
    assert token and token != lost.token and shown.count(" ") == (len(token) - 1) // 4
    assert page.locator("#secret-squad").inner_text() == lost.id
    assert page.locator("#secret-url").inner_text() == f"{live_hub.url}/phone/"
    assert _field_me(live_hub, lost.id, lost.token) == 401  # the old one stopped at once
    assert _field_me(live_hub, lost.id, token) == 200
    assert token not in page.url
    page.wait_for_function(  # the roster says who replaced it
        "(id) => document.querySelector(`#roster tr[data-squad='${id}']`)"
        ".cells[4].innerText.includes('web-unit')",
        arg=lost.id,
    )
    pages.shot(page, "replaced")
    page.click("#secret-done")
    assert page.locator("#secret").is_hidden()
    assert page.locator("#secret-token").inner_text() == ""  # not left in the page


def test_the_admin_registers_a_squad_with_its_categories(pages: Any, live_hub: LiveHub) -> None:
    page = pages.signed_in("admin", "/squads.html?unit=gas", lang="en", size="wall")
    page.locator("#new-skills input").first.wait_for()  # the page has its unit and its form
    assert page.locator("#unit").input_value() == "gas"
    page.click("#register button[type=submit]")  # no name: said on the page, nothing sent
    assert "name" in page.locator("#register-error").inner_text()
    page.fill("#new-name", "Gas night crew")
    page.fill("#new-capacity", "3")
    first_skill = page.locator("#new-skills input").first
    skill = first_skill.get_attribute("value")
    first_skill.check()
    page.click("#register button[type=submit]")
    page.locator("#secret").wait_for()
    token = page.locator("#secret-token").inner_text().replace(" ", "")
    roster = live_hub.call("center", "GET", "/api/v1/squads?unit=gas").json()
    [made] = [r for r in roster if r["name"] == "Gas night crew"]
    assert (made["capacity"], made["skills"]) == (3, [skill])
    assert _field_me(live_hub, made["id"], token) == 200
    row = _row(page, made["id"])
    row.wait_for()
    category = next(c for c in live_hub.api("GET", "/api/v1/categories") if c["code"] == skill)
    assert category["name_en"] in row.inner_text() and "0 / 3" in row.inner_text()
    assert "fresh" in (row.get_attribute("class") or "")  # marked as just registered
    assert "Luoyang Gas" in page.locator("#register-title").inner_text()  # the unit it is in
    assert page.locator("#new-name").input_value() == ""  # the form is ready for the next
    pages.shot(page, "registered")


def test_the_center_reads_every_units_squads_and_changes_none(
    pages: Any, live_hub: LiveHub
) -> None:
    page = pages.signed_in("center", "/squads.html", lang="zh", size="phone")
    page.locator("#roster tbody tr").first.wait_for()
    page.select_option("#unit", UNIT_OF_DESK)
    assert live_hub.squad is not None
    _row(page, live_hub.squad.id).wait_for()
    assert page.locator("#roster tbody button").count() == 0
    assert page.locator("#register").is_hidden()
    assert "unit=" + UNIT_OF_DESK in page.url  # the unit chosen survives a reload
    page.fill("#find", "no squad is called this")
    assert page.locator("#roster td.empty").is_visible()
    pages.shot(page, "center")


@pytest.mark.parametrize("role", ["calltaker", "wall"])
def test_a_role_without_squads_is_told_so_and_nothing_is_asked(pages: Any, role: str) -> None:
    """A call-taker or the wall may open the page (signed in), but it asks the hub for
    nothing they may not read (a 403 would fail the page's watch) and says whose page it is."""
    page = pages.signed_in(role, "/squads.html", lang="en", size="phone")
    page.wait_for_function("() => document.getElementById('status').textContent !== ''")
    assert "desks" in page.locator("#status").inner_text()
    assert page.locator("#roster").is_hidden() and page.locator("#register").is_hidden()
