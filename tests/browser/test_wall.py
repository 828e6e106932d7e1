"""The wall map in a browser, on a busy city: squads of every unit (three with real phones
that take work), requests in several states and some overdue, the day's figures and the
ticker; live positions; screenshots at both sizes in both languages."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_sync

from dispatch_field import protocol
from dispatch_field.client import FieldClient
from tests.browser.harness import LANGS, SIZES, Background, LiveHub, start_live_hub
from tools.wall_fps import district_rings, move_squads, seed_squads

XIGONG = (34.670, 112.445)
CROWD = 300  # squads placed straight into Redis: busy or off duty, so none is offered work
REQUESTS = [  # (category, lat, lon): water ones go to the phones, the gas ones wait
    ("water_main_burst", 34.672, 112.447),
    ("water_outage", 34.668, 112.440),
    ("water_quality", 34.675, 112.452),
    ("gas_leak_smell", 34.690, 112.470),
    ("gas_outage", 34.640, 112.420),
    ("gas_leak_smell", 34.700, 112.400),
]


@pytest.fixture(scope="module")
def live_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    """Deadlines 100 times shorter (accept in seconds): waiting requests turn overdue."""
    hub = start_live_hub(tmp_path_factory.mktemp("wall-hub"), time_scale=0.01, offer_window_s=120)
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def city(live_hub: LiveHub, background: Background) -> Iterator[dict[str, Any]]:
    client = redis_sync.Redis.from_url(live_hub.redis_url)
    units = [u["code"] for u in live_hub.api("GET", "/api/v1/units") if u["code"] != "water"]
    areas = district_rings(live_hub.url, live_hub.admin_headers)
    crowd = seed_squads(client, units, CROWD, random.Random(3), free=False, areas=areas)
    phones = []
    for n in range(3):
        squad = live_hub.create_squad("water", f"Water {n + 1}")
        phone = FieldClient(live_hub.process.ws, squad.id, squad.token, reconnect=False)
        background.run(phone.start())
        background.run(phone.duty(True))
        background.run(phone.pos(XIGONG[0] + 0.004 * n, XIGONG[1] + 0.003 * n))
        phones.append(phone)
    created = []
    for category, lat, lon in REQUESTS:
        body = {
            "caller_phone": "13912345678",
            "category": category,
            "description": "burst pipe outside number 5",
            "lat": lat,
            "lon": lon,
        }
        answer = live_hub.call("calltaker", "POST", "/api/v1/requests", body)
        assert answer.status_code == 201, answer.text
        created.append(answer.json()["id"])
    # the phones: one arrives on the scene, one is on its way, one lets its offer wait
    for phone, steps in zip(phones, (("accept", "arrive"), ("accept", "enroute"), ()), strict=True):
        offer = background.run(phone.next_frame(protocol.Offer, timeout_s=20))
        for step in steps:
            background.run(getattr(phone, step)(offer.assignment))
    yield {"redis": client, "crowd": crowd, "requests": created, "phones": phones}
    for phone in phones:
        background.run(phone.close())
    client.close()


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("lang", LANGS)
def test_the_wall_shows_the_city(pages: Any, city: dict[str, Any], lang: str, size: str) -> None:
    page = pages.signed_in("wall", "/wall.html", lang=lang, size=size)
    page.wait_for_function(
        "([squads, requests]) => window.wallView && window.wallView.squads.count() === squads"
        " && window.wallView.view.requests.size === requests",
        arg=[CROWD + 3, len(REQUESTS)],
    )
    # the gas requests wait for a squad that never comes: past their accept limit (3 s here)
    page.wait_for_function("() => Number(document.getElementById('n-overdue').textContent) >= 3")
    page.wait_for_function("() => document.getElementById('n-dispatched').textContent === '2'")
    page.wait_for_function("() => document.getElementById('n-arrival').textContent !== '–'")
    assert page.locator("#n-open").inner_text() == str(len(REQUESTS))
    page.wait_for_selector("#late-box", state="visible")
    assert page.locator("#late li").count() >= 3
    assert page.locator(".req.overdue").count() >= 3
    assert page.locator(".big.late.alarm").count() == 1
    assert page.locator("#ticker li").count() >= 5  # of 6
    ticker = page.locator("#ticker").text_content() or ""  # a phone shows only two lines
    assert any(request in ticker for request in city["requests"])
    notice = "督办通知" if lang == "zh" else "supervision notice"
    assert notice in ticker  # the deadlines passing, as they happen
    assert "13912345678" not in page.content()  # no caller's number on a wall
    page.wait_for_timeout(300)  # the pulsing to its brightest
    pages.shot(page)


def test_positions_move_live(pages: Any, city: dict[str, Any]) -> None:
    page = pages.signed_in("wall", "/wall.html", lang="en", size="wall")
    page.wait_for_function("(n) => window.wallView.squads.count() === n", arg=CROWD + 3)
    first = city["crowd"][0]
    before = page.evaluate("(id) => window.wallView.squads.get(id)[2]", first.id)
    assert before == pytest.approx(first.lat, abs=1e-5)
    move_squads(city["redis"], city["crowd"][:1], 1.0, random.Random(5))
    page.wait_for_function(
        "([id, lat]) => Math.abs(window.wallView.squads.get(id)[2] - lat) < 1e-5",
        arg=[first.id, first.lat],
    )


def test_signing_out_of_the_wall(pages: Any, live_hub: LiveHub) -> None:
    page = pages.signed_in("wall", "/wall.html", lang="zh", size="phone")
    page.click("#signout")
    page.wait_for_url("**/signin.html**")
    page.goto("/wall.html")
    assert "/signin.html" in page.url


# Every district name's box on screen, but the ones hidden for want of room.
LABEL_BOXES = """() => [...document.querySelectorAll('.district-label')]
  .filter((label) => getComputedStyle(label).visibility !== 'hidden')
  .map((label) => { const r = label.getBoundingClientRect();
    return [label.textContent, r.left, r.top, r.right, r.bottom]; })"""


# The city-wide maps with district names: the wall, the call-taker's intake and the center's
# request map (a third of the console's width).
NAMED_MAPS = [
    pytest.param("wall", "/wall.html", id="wall"),
    pytest.param("calltaker", "/intake.html", id="intake"),
    pytest.param("center", "/center.html", id="center"),
]


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize(("role", "path"), NAMED_MAPS)
def test_district_names_do_not_cover_each_other(
    pages: Any, live_hub: LiveHub, lang: str, role: str, path: str
) -> None:
    """The urban districts are small on a city-wide view: at a laptop's 1600x900 and a wall's
    1920x1080, no two names overlap on any of the maps, and all of them still find room.
    (The intake's and the center's maps once drew them centred, covering each other.)"""
    districts = len(live_hub.api("GET", "/api/v1/districts"))
    page = pages.signed_in(role, path, lang=lang, size="wall")
    for width, height in ((1600, 900), (1920, 1080)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_function(
            "(n) => document.fonts.status === 'loaded'"
            " && document.querySelectorAll('.district-label').length === n",
            arg=districts,
        )
        page.evaluate(
            "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"
        )
        boxes = page.evaluate(LABEL_BOXES)
        assert len(boxes) == districts, (path, width, boxes)
        for i, (name, left, top, right, bottom) in enumerate(boxes):
            for other, o_left, o_top, o_right, o_bottom in boxes[i + 1 :]:
                apart = right <= o_left or o_right <= left or bottom <= o_top or o_bottom <= top
                assert apart, f"{path} {width}x{height}: {name} covers {other}"
    pages.shot(page)
