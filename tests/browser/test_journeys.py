"""A call's whole journey across the pages, in real Chromium against one live hub, in Chinese
and in English. Every page stays open all along, each in its own browser context: the intake
console, the center console and the wall map at a wall's size, and two squads' phone apps
(/phone/, signed in with their tokens, on duty, located near the scene) at a phone's size.

1. A request typed in the intake console by keyboard alone appears on the wall map and as an
   offer in the phone app of the water squad near the scene.
2. Accepting on the phone changes the request's state in the center console, live: the page
   is never reloaded.
3. The squad taps "not our jurisdiction" with a reason; the center rules in the console's
   form (reassign to the gas company), and the gas squad's phone gets the offer.
4. The hub process stops (every socket dropped, 4000) and starts again: a step tapped on the
   phone meanwhile is delivered once, and every page resumes by itself (test_phone.py drives
   a drop and an offline step at length, on the phone alone).
5. Each page is shot at each step, and at the end at the other size: look at them.

No page may log a console error, fail a request or get a 4xx/5xx (the harness checks), but
for the refused connections while the hub is down.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Pages
from tests.browser.harness import LANGS, LiveHub, start_live_hub
from tests.browser.intake_console import caller_number, fill_by_keyboard, open_intake
from tests.browser.phone_app import card_of, go_on_duty, sign_in, tap_step

LIVE_MS = 15_000  # what a live page must show within this (feeds, polls, throttled reloads)
RESUME_MS = 45_000  # a page's reconnection backs off to 15 s while the hub is down
FINAL = ("resolved", "cancelled", "transferred")
# While the hub is down, the pages' reconnections and polls are refused: expected then.
HUB_DOWN = (
    r"WebSocket connection to '.*' failed",
    r"ERR_CONNECTION_REFUSED",
    r"ERR_CONNECTION_RESET|ERR_EMPTY_RESPONSE",  # a request under way as the hub stopped
)

# Every district's name is inside the wall's map (the city fits it, whatever its size).
CITY_IN_VIEW = """() => {
  const map = document.getElementById("map").getBoundingClientRect();
  const labels = [...document.querySelectorAll(".district-label")];
  return labels.length > 0 && labels.every((label) => {
    const box = label.getBoundingClientRect();
    return box.left >= map.left && box.right <= map.right
      && box.top >= map.top && box.bottom <= map.bottom;
  });
}"""


@dataclass(frozen=True)
class Journey:
    category: str  # typed into the category field (its first match is taken)
    place: str  # typed into the place field (its first match is taken)
    scene: tuple[float, float]  # that place in the gazetteer (server/city/luoyang-places.csv)
    description: str
    reason: str  # the water squad's: not our jurisdiction
    note: str  # the center's ruling
    water: str  # the units as the pages name them
    gas: str
    crews: tuple[str, str]  # the water and the gas squads' names
    moved_in: str  # the wall's name for the request reaching its new unit


JOURNEYS = {
    "zh": Journey(
        "gs",  # 供水管道爆裂, by its initials
        "wcgy",  # 王城公园
        (34.6725, 112.4365),
        "路口水管爆裂，水漫到马路上",
        "现场是燃气管道漏气，不归供水公司",
        "燃气公司管辖，请立即处置",
        "洛阳市自来水公司",
        "洛阳市燃气公司",
        ("供水抢修一队", "燃气抢修一队"),
        "改派转入",
    ),
    "en": Journey(
        "burst",  # Water main burst
        "Lijing Gate",  # 丽景门
        (34.6795, 112.4735),
        "water pouring out at the crossroads",
        "it is a gas pipe leaking, not a water main",
        "the gas company's: go at once",
        "Luoyang Water Supply Company",
        "Luoyang Gas Company",
        ("Water crew 1", "Gas crew 1"),
        "reassigned in",
    ),
}


@pytest.fixture(scope="module")
def live_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    """The journeys' own hub: its process is stopped and started again midway, and no other
    test's squads or waiting requests stand between a journey's request and its squads."""
    hub = start_live_hub(tmp_path_factory.mktemp("journey-hub"))
    yield hub
    hub.stop()


@pytest.fixture
def made(live_hub: LiveHub, tmp_path: Path) -> Iterator[list[str]]:
    """The requests a journey makes: any still open at its end is cancelled, so that the next
    journey's squads are offered nothing of it (the hub started again first if the journey
    ended while it was down)."""
    requests: list[str] = []
    yield requests
    if live_hub.process.process.poll() is not None:
        live_hub.start_again(tmp_path / "hub-after.log")
    for request_id in requests:
        if live_hub.api("GET", f"/api/v1/requests/{request_id}")["state"] in FINAL:
            continue
        body = {"reason": "withdrawn", "note": "the journey is over"}
        live_hub.api("POST", f"/api/v1/requests/{request_id}/cancel", body)


def near(point: tuple[float, float], north: float, east: float) -> tuple[float, float]:
    return (point[0] + north, point[1] + east)


def wall_state(wall: Any, request_id: str, state: str) -> None:
    """Until the wall map draws the request in ``state`` (its marker's data: the markers
    carry no number of their own)."""
    wall.wait_for_function(
        "([id, state]) => { const m = window.wallView.view.requests.get(id);"
        " return Boolean(m) && m.data.state === state; }",
        arg=[request_id, state],
        timeout=LIVE_MS,
    )


def timeline_of(hub: LiveHub, request_id: str) -> list[dict[str, Any]]:
    return hub.api("GET", f"/api/v1/requests/{request_id}")["timeline"]  # type: ignore[no-any-return]


def assert_named(items: Any, lang: str, within: str = "") -> None:
    """No event in ``items`` goes by its code (``reassigned_in``): each is named in the page's
    language (``within``: the name is the second part of the text, split by it)."""
    texts = items.all_inner_texts()
    names = [t.split(within)[1] if within else t for t in texts]
    code = re.compile(r"[a-z]+(_[a-z]+)+" if lang == "en" else r"[a-z_]+")
    assert names and not [n for n in names if code.fullmatch(n.strip())], texts


def intake_state(intake: Any, request_id: str, state: str) -> None:
    """Until the intake console's list of the seat's requests shows the request in ``state``."""
    line = intake.locator(f"#recent li[data-id='{request_id}'] .state")
    expect(line).to_have_class(re.compile(rf"\b{state}\b"), timeout=LIVE_MS)


@pytest.mark.parametrize("lang", LANGS)
def test_a_call_goes_through_every_page(
    pages: Pages, live_hub: LiveHub, made: list[str], tmp_path: Path, lang: str
) -> None:
    j = JOURNEYS[lang]

    # The squads, each with its phone in its own context: water near the scene, gas a little
    # farther (out of the arrival radius: its steps are its own taps).
    water_squad = live_hub.create_squad("water", j.crews[0])
    gas_squad = live_hub.create_squad("gas", j.crews[1])
    water = pages.phone_app(lang, at=near(j.scene, 0.005, 0.003))
    sign_in(water, water_squad)
    go_on_duty(water, live_hub, water_squad)
    gas = pages.phone_app(lang, at=near(j.scene, -0.008, -0.006))
    sign_in(gas, gas_squad)
    go_on_duty(gas, live_hub, gas_squad)

    wall = pages.signed_in("wall", "/wall.html", lang=lang, size="wall")
    expect(wall.locator("#status")).to_have_attribute("data-state", "live", timeout=LIVE_MS)
    center = pages.signed_in("center", "/center.html", lang=lang, size="wall")
    expect(center.locator("#status")).to_have_attribute("data-state", "live", timeout=LIVE_MS)
    center.evaluate("window.notReloaded = true")  # a reload would forget it

    # 1. Typed in the intake console by keyboard alone ...
    intake = open_intake(pages, lang)
    fill_by_keyboard(intake, caller_number(), j.category, j.description, j.place)
    expect(intake.locator("#triage")).to_contain_text(j.water)
    pages.shot(intake, "1-intake-typed")
    intake.keyboard.press("Control+Enter")
    expect(intake.locator("#result")).to_be_visible()
    request_id = intake.locator("#result-number").inner_text()
    made.append(request_id)
    assert re.fullmatch(r"\d{8}-\d{6}", request_id), request_id

    # ... it is on the wall map, ...
    wall_state(wall, request_id, "offered")
    expect(wall.locator("#ticker")).to_contain_text(request_id, timeout=LIVE_MS)
    pages.shot(wall, "1-wall-offered")
    # ... offered on the water squad's phone, ...
    offer = card_of(water, request_id)
    expect(offer).to_have_attribute("data-state", "offered")
    expect(offer).to_contain_text(j.description)
    pages.shot(water.page, "1-phone-water-offer", full_page=True)
    # ... and in the center's queue.
    queued = center.locator(f"#pane-queue [data-request='{request_id}']")
    expect(queued.locator(".state")).to_have_class(re.compile(r"\bs-offered\b"), timeout=LIVE_MS)
    queued.click()
    expect(center.locator("#request-head")).to_contain_text(request_id)
    expect(center.locator("#request-head .state")).to_have_class(re.compile(r"\bs-offered\b"))
    pages.shot(center, "1-center-offered")

    # 2. Accepted on the phone: the center console shows it live, without a reload.
    tap_step(offer, "accept")
    expect(offer).to_have_attribute("data-state", "accepted")
    expect(offer.locator(".sending")).to_have_count(0, timeout=LIVE_MS)  # the hub said ok
    expect(center.locator("#request-head .s-accepted")).to_be_visible(timeout=LIVE_MS)
    held_by = center.locator("#request-facts dd[data-fact=squad]")
    expect(held_by).to_contain_text(water_squad.id)  # its name first, the id beside it
    expect(held_by).to_contain_text(water_squad.name)
    expect(queued.locator(".state")).to_have_class(re.compile(r"\bs-accepted\b"), timeout=LIVE_MS)
    assert center.evaluate("window.notReloaded") is True
    wall_state(wall, request_id, "accepted")
    intake_state(intake, request_id, "accepted")
    pages.shot(water.page, "2-phone-water-accepted", full_page=True)
    pages.shot(center, "2-center-accepted")
    pages.shot(intake, "2-intake-accepted")

    # 3. Not our jurisdiction, with a reason ...
    tap_step(offer, "dispute")
    expect(water.page.locator("#sheet")).to_be_visible()
    water.page.fill("#sheet-text", j.reason)
    pages.shot(water.page, "3-phone-water-not-our-jurisdiction", full_page=True)
    water.page.click("#sheet-submit")
    expect(water.page.locator("article.job", has_text=request_id)).to_have_count(0)
    # ... in the center's disputes, its ruling form open on the request ...
    center.click("#tab-disputes")
    disputed = center.locator(f"#pane-disputes [data-request='{request_id}']")
    expect(disputed).to_contain_text(j.reason, timeout=LIVE_MS)
    expect(center.locator("#request-facts")).to_contain_text(j.reason, timeout=LIVE_MS)
    form = center.locator("#ruling-form")
    expect(form).to_be_visible(timeout=LIVE_MS)
    # ... ruled: reassigned to the gas company, with a category of its own and a note.
    form.locator("select[name=unit]").select_option("gas")
    form.locator("select[name=category]").select_option("gas_leak_smell")
    form.locator("textarea[name=note]").fill(j.note)
    pages.shot(center, "3-center-ruling")
    form.locator("button[type=submit]").click()
    expect(center.locator("#request-facts dd[data-fact=unit]")).to_have_text(j.gas, timeout=LIVE_MS)
    expect(center.locator("#timeline .t-reassigned")).to_contain_text(j.note, timeout=LIVE_MS)
    expect(disputed).to_have_count(0, timeout=LIVE_MS)
    # The gas squad's phone gets the offer, and takes it.
    moved = card_of(gas, request_id)
    expect(moved).to_have_attribute("data-state", "offered")
    pages.shot(gas.page, "3-phone-gas-offer", full_page=True)
    tap_step(moved, "accept")
    expect(moved.locator(".sending")).to_have_count(0, timeout=LIVE_MS)
    expect(center.locator("#request-head .s-accepted")).to_be_visible(timeout=LIVE_MS)
    expect(center.locator("#request-facts dd[data-fact=squad]")).to_have_text(
        f"{gas_squad.name} {gas_squad.id}", timeout=LIVE_MS
    )
    center.click("#tab-queue")
    expect(queued.locator(".state")).to_have_class(re.compile(r"\bs-accepted\b"), timeout=LIVE_MS)
    wall_state(wall, request_id, "accepted")
    # Every step of the way is named in the page's language, on the wall and in the console.
    expect(wall.locator("#ticker")).to_contain_text(j.moved_in, timeout=LIVE_MS)
    assert_named(wall.locator("#ticker .what"), lang)
    assert_named(center.locator("#timeline li b"), lang)
    pages.shot(center, "3-center-reassigned")
    pages.shot(wall, "3-wall-reassigned")

    # 4. The hub process stops: every socket is dropped, the pages say so.
    for opened in pages.opened:
        for pattern in HUB_DOWN:
            opened.watch.allow(pattern)
    live_hub.process.stop()
    expect(gas.page.locator("#link-state")).not_to_have_attribute("data-state", "live")
    expect(center.locator("#status")).to_have_attribute("data-state", "stale")
    expect(wall.locator("#status")).to_have_attribute("data-state", "offline")
    # A step tapped meanwhile: shown at once, kept on the phone until it can be sent.
    tap_step(moved, "enroute")
    expect(gas.page.locator("#queued")).to_be_visible()
    expect(moved).to_have_attribute("data-state", "en_route")
    expect(moved.locator(".sending")).to_have_count(1)
    pages.shot(gas.page, "4-phone-gas-hub-down", full_page=True)
    pages.shot(center, "4-center-hub-down")
    pages.shot(wall, "4-wall-hub-down")

    # The hub is back: each page resumes by itself, and the step is delivered once.
    live_hub.start_again(tmp_path / "hub-again.log")
    expect(gas.page.locator("#link-state")).to_have_attribute(
        "data-state", "live", timeout=RESUME_MS
    )
    expect(gas.page.locator("#queued")).to_be_hidden(timeout=LIVE_MS)
    expect(moved.locator(".sending")).to_have_count(0, timeout=LIVE_MS)
    expect(water.page.locator("#link-state")).to_have_attribute(
        "data-state", "live", timeout=RESUME_MS
    )
    expect(center.locator("#status")).to_have_attribute("data-state", "live", timeout=RESUME_MS)
    expect(center.locator("#request-head .s-en_route")).to_be_visible(timeout=LIVE_MS)
    expect(wall.locator("#status")).to_have_attribute("data-state", "live", timeout=RESUME_MS)
    wall_state(wall, request_id, "en_route")
    expect(intake.locator("#recent-status")).to_have_attribute(
        "data-state", "live", timeout=RESUME_MS
    )
    intake_state(intake, request_id, "en_route")
    assert center.evaluate("window.notReloaded") is True
    # The call-taker opens the request from the seat's list: the whole way, named.
    intake.click(f"#recent a[data-request='{request_id}']")
    expect(intake.locator("#detail-timeline")).to_contain_text(gas_squad.id)  # on its way
    assert_named(intake.locator("#detail-timeline li"), lang, within=" · ")
    pages.shot(intake, "4-intake-the-requests-way")
    intake.keyboard.press("Escape")
    timeline = timeline_of(live_hub, request_id)
    steps = [(e["type"], e.get("by")) for e in timeline]
    assert steps.count(("en_route", f"squad:{gas_squad.id}")) == 1, timeline
    assert steps.count(("accepted", f"squad:{gas_squad.id}")) == 1, timeline
    pages.shot(gas.page, "4-phone-gas-resumed", full_page=True)
    for name, page in (("center", center), ("wall", wall), ("intake", intake)):
        pages.shot(page, f"4-{name}-resumed")

    # 5. Each page at the other size, as it stands at the end of the journey.
    for name, page in (("intake", intake), ("center", center), ("wall", wall)):
        pages.resize(page, "phone")
        if page is wall:  # the whole city again, in the map's new place
            wall.wait_for_function(CITY_IN_VIEW, timeout=LIVE_MS)
        pages.shot(page, f"5-{name}-end", full_page=True)
    for name, page in (("phone-gas", gas.page), ("phone-water", water.page)):
        pages.resize(page, "wall")
        pages.shot(page, f"5-{name}-end")
