"""The center console (/center.html) in a real browser against a real hub and real squad
phones (the reference field client): it loads cleanly in both languages; a request created
through the API shows up live; a squad's dispute is ruled in the console's form (the hub's
field error shown beside the field first) and the request moves to the new unit, whose
squad gets the offer; notices and a squad going offline appear live; a unit desk sees only
its unit. Screenshots at the wall's size in test-artifacts/screenshots/."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from dispatch_field import protocol
from dispatch_field.client import FieldClient
from tests.browser.harness import Background, LiveHub, start_live_hub

XIGONG = (34.670, 112.445)  # a point in Xigong district
LIVE_MS = 10_000  # what the feed must bring within this
FINAL = ("resolved", "cancelled", "transferred")

# Everything here on one hub of its own: limits 50x shorter (notices within seconds), a
# squad's track sampled every 0.2 s, a squad holding work offline 1 s is reported.
SETTINGS = {"time_scale": 0.02, "track_interval_s": 0.2, "offline_alert_s": 1}


@pytest.fixture(scope="module")
def live_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    hub = start_live_hub(tmp_path_factory.mktemp("console-hub"), **SETTINGS)
    yield hub
    hub.stop()


class Phone:
    """A squad's phone: the reference field client, run on the harness's background loop
    (the sync Playwright API owns the test's thread)."""

    def __init__(
        self, hub: LiveHub, background: Background, unit: str, name: str, lat: float, lon: float
    ) -> None:
        squad = hub.create_squad(unit, name)
        self.id, self.unit = squad.id, unit
        self._run = background.run
        self.client: FieldClient = self._run(self._connect(hub, squad.token, lat, lon))
        deadline = time.monotonic() + 10
        while not self._available(hub):
            assert time.monotonic() < deadline, f"squad {self.id} never became available"
            time.sleep(0.05)

    async def _connect(self, hub: LiveHub, token: str, lat: float, lon: float) -> FieldClient:
        client = FieldClient(hub.process.ws, self.id, token, reconnect=False)
        await client.start()
        await client.duty(True)
        await client.pos(lat, lon)
        return client

    def _available(self, hub: LiveHub) -> bool:
        squad = hub.api("GET", f"/api/v1/squads/{self.id}")
        return bool(squad["online"] and squad["on_duty"] and squad["position"])

    def offer(self, request_id: str) -> protocol.Offer:
        offer: protocol.Offer = self._run(self.client.next_frame(protocol.Offer, timeout_s=15))
        assert offer.request.id == request_id, offer
        return offer

    def accept(self, assignment: str) -> None:
        self._run(self.client.accept(assignment))

    def enroute(self, assignment: str) -> None:
        self._run(self.client.enroute(assignment))

    def arrive(self, assignment: str) -> None:
        self._run(self.client.arrive(assignment))

    def resolve(self, assignment: str, note: str) -> None:
        self._run(self.client.resolve(assignment, note))

    def dispute(self, assignment: str, reason: str) -> None:
        self._run(self.client.dispute(assignment, reason))

    def drive(self, way: list[tuple[float, float]], pause_s: float = 0.3) -> None:
        for lat, lon in way:
            self._run(self.client.pos(lat, lon))
            time.sleep(pause_s)

    def close(self) -> None:
        self._run(self.client.close())


@dataclass
class Phones:
    """The phones a test connects (``phones.connect(unit, name, lat, lon)``); closed at its
    end (offline: later tests' requests wait for nobody)."""

    hub: LiveHub
    background: Background
    connected: list[Phone] = field(default_factory=list)

    def connect(self, unit: str, name: str, lat: float, lon: float) -> Phone:
        phone = Phone(self.hub, self.background, unit, name, lat, lon)
        self.connected.append(phone)
        return phone


@pytest.fixture
def phones(live_hub: LiveHub, background: Background) -> Iterator[Phones]:
    made = Phones(live_hub, background)
    yield made
    for phone in made.connected:
        phone.close()


class Requests:
    """Requests a test creates through the API (as the admin); those still open at its end
    are cancelled, so that no later test's squad is offered one of them."""

    def __init__(self, hub: LiveHub) -> None:
        self.hub = hub
        self.created: list[str] = []

    def create(self, lat: float, lon: float, category: str, text: str) -> str:
        created = self.hub.api(
            "POST",
            "/api/v1/requests",
            {
                "caller_phone": "13800000000",
                "category": category,
                "description": text,
                "lat": lat,
                "lon": lon,
            },
            expect=201,
        )
        self.created.append(created["id"])
        return str(created["id"])

    def cancel_open(self) -> None:
        for request_id in self.created:
            if self.hub.api("GET", f"/api/v1/requests/{request_id}")["state"] in FINAL:
                continue
            body = {"reason": "withdrawn", "note": "the test is over"}
            self.hub.api("POST", f"/api/v1/requests/{request_id}/cancel", body)


@pytest.fixture
def requests(live_hub: LiveHub) -> Iterator[Requests]:
    made = Requests(live_hub)
    yield made
    made.cancel_open()


def _console(pages: Any, role: str, lang: str) -> Any:
    page = pages.signed_in(role, "/center.html", lang=lang, size="wall")
    page.wait_for_selector("#status[data-state=live]", timeout=LIVE_MS)
    return page


def _item(page: Any, pane: str, request_id: str) -> Any:
    return page.locator(f"#pane-{pane} [data-request='{request_id}']").first


# ---- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_console_loads_cleanly_in_both_languages(pages: Any, lang: str) -> None:
    page = _console(pages, "center", lang)
    title = page.locator("#top h1").inner_text()
    assert ("督办台" in title) if lang == "zh" else ("Supervision console" in title)
    assert page.evaluate("document.documentElement.lang") == ("zh-CN" if lang == "zh" else "en")
    nav = page.locator("#nav a")
    links = [nav.nth(i).get_attribute("href") for i in range(nav.count())]
    assert {"/reports/", "/squads.html"} <= set(links), links
    page.wait_for_selector("#detail-empty", state="visible")
    pages.shot(page)


@pytest.mark.parametrize("width", [1440, 1100])
def test_the_header_fits_a_desks_screen(pages: Any, width: int) -> None:
    """A new user's trial: at 1440 px the water desk's English header (its name, the links,
    the clock) ran off the screen, the sign-out button with it."""
    page = _console(pages, "unit", "en")
    page.set_viewport_size({"width": width, "height": 900})
    page.wait_for_timeout(100)
    for element in ("signout", "nav"):
        right = page.evaluate(f"document.getElementById('{element}').getBoundingClientRect().right")
        assert right <= width, (element, right)
    links = page.locator("#nav a")
    for i in range(links.count()):  # every link of the bar in view, none scrolled away
        box = links.nth(i).bounding_box()
        assert box is not None and box["x"] + box["width"] <= width, links.nth(i).inner_text()
    pages.shot(page)


def test_a_role_that_may_not_watch_is_told_so_and_nothing_is_asked(pages: Any) -> None:
    page = pages.signed_in("calltaker", "/center.html", lang="zh", size="wall")
    page.wait_for_selector("#denied:visible")
    assert page.locator("#console").is_hidden()  # no list asked for: none would be allowed


def test_a_request_created_through_the_api_shows_up_live(pages: Any, requests: Requests) -> None:
    page = _console(pages, "center", "zh")
    request_id = requests.create(*XIGONG, "water_outage", "整栋楼停水，水龙头无水")
    item = _item(page, "queue", request_id)
    item.wait_for(timeout=LIVE_MS)  # no reload: the feed brought it
    assert "待派" in item.inner_text()
    item.click()
    page.wait_for_selector(f"#request-head:has-text('{request_id}')")
    assert "受理" in page.locator("#timeline").inner_text()
    assert "整栋楼停水" in page.locator("#request-facts").inner_text()
    pages.shot(page)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_dispute_is_ruled_in_the_console_and_the_request_moves_to_the_new_unit(
    pages: Any, live_hub: LiveHub, requests: Requests, phones: Phones, lang: str
) -> None:
    water = phones.connect("water", "供水抢修一队", XIGONG[0] + 0.012, XIGONG[1])
    gas = phones.connect("gas", "燃气抢修一队", XIGONG[0] - 0.01, XIGONG[1] + 0.004)
    request_id = requests.create(*XIGONG, "water_main_burst", "路口冒水，有刺鼻气味")
    offer = water.offer(request_id)
    water.accept(offer.assignment)
    water.enroute(offer.assignment)
    water.drive([(XIGONG[0] + 0.012 - 0.0015 * i, XIGONG[1] + 0.0004 * i) for i in range(1, 7)])

    page = _console(pages, "center", lang)
    pages.watch(page).allow(r"\b422\b.*/ruling")  # the first try below, on purpose
    _item(page, "queue", request_id).click()
    page.wait_for_selector(f"#request-head:has-text('{request_id}')")
    page.wait_for_function("document.querySelectorAll('#map path.track').length > 0")
    pages.shot(page, "en-route-with-its-track")

    water.dispute(offer.assignment, "现场是燃气泄漏，不归供水公司")
    page.click("#tab-disputes")
    _item(page, "disputes", request_id).wait_for(timeout=LIVE_MS)
    form = page.locator("#ruling-form")
    form.wait_for(timeout=LIVE_MS)  # the open request went to disputed, live: its ruling form
    assert "燃气泄漏" in page.locator("#request-facts").inner_text()

    form.locator("select[name=unit]").select_option("gas")
    form.locator("select[name=category]").select_option("gas_leak_smell")
    form.locator("button[type=submit]").click()  # no note: the hub says so, beside the note
    note_error = form.locator("[data-error-for=note]")
    note_error.wait_for()
    assert note_error.inner_text() == ("请检查：必填" if lang == "zh" else "Check: required")
    assert "$.note" in (note_error.get_attribute("title") or "")  # the hub's own words
    assert form.locator(".field.invalid textarea[name=note]").count() == 1
    pages.shot(page, "ruling-form-with-the-hubs-field-error")

    form.locator("textarea[name=note]").fill("燃气公司管辖，请立即处置")
    form.locator("select[name=unit]").select_option("")  # no unit chosen: required, too
    form.locator("button[type=submit]").click()
    unit_error = form.locator("[data-error-for=unit]")
    unit_error.wait_for()
    assert unit_error.inner_text() == ("请检查：必填" if lang == "zh" else "Check: required")
    assert form.locator(".field.invalid select[name=unit]").count() == 1
    # The gas company for a water main burst (the category kept): the city refuses, and
    # the form says so in names, not the hub's codes.
    gas_name = "洛阳市燃气公司" if lang == "zh" else "Luoyang Gas Company"
    water_name = "洛阳市自来水公司" if lang == "zh" else "Luoyang Water Supply Company"
    form.locator("select[name=unit]").select_option("gas")
    form.locator("button[type=submit]").click()
    form.locator(f"[data-error-for=unit]:has-text('{gas_name}')").wait_for()
    refused = unit_error.inner_text()
    assert water_name in refused and "water_main_burst" not in refused, refused
    assert "(water does)" not in refused and "district xigong" not in refused, refused
    pages.shot(page, "ruling-refused-by-the-city-in-names")
    form.locator("select[name=category]").select_option("gas_leak_smell")
    form.locator("button[type=submit]").click()
    moved = gas.offer(request_id)  # the gas squad's phone gets it
    assert moved.request.category == "gas_leak_smell"
    page.wait_for_selector(f"#request-facts dd[data-fact=unit]:has-text('{gas_name}')")
    page.wait_for_selector("#timeline .t-reassigned")
    page.wait_for_selector(f"#pane-disputes:not(:has([data-request='{request_id}']))")
    assert page.locator("#ruling-form").count() == 0
    after = live_hub.api("GET", f"/api/v1/requests/{request_id}")
    assert after["unit"] == "gas" and after["squad"] == gas.id
    assert [e for e in after["timeline"] if e["type"] == "reassigned"][0][
        "by"
    ] == "center:web-center"
    page.click("#tab-queue")
    pages.shot(page, "after-the-ruling")


def test_cancel_shows_the_hubs_field_error_then_cancels(
    pages: Any, live_hub: LiveHub, requests: Requests
) -> None:
    original = requests.create(34.68, 112.43, "streetlight_out", "路灯不亮")
    repeat = requests.create(34.68, 112.43, "streetlight_out", "路灯不亮（重复来电）")
    page = _console(pages, "center", "zh")
    pages.watch(page).allow(r"\b422\b.*/cancel")
    page.goto(f"/center.html#{repeat}")
    page.wait_for_selector(f"#request-head:has-text('{repeat}')")
    page.click("#actions [data-action=cancel]")
    form = page.locator("#cancel-form")
    form.locator("select[name=reason]").select_option("duplicate")
    form.locator("textarea[name=note]").fill("同一路灯重复来电")
    form.locator("button[type=submit]").click()  # duplicate, but of which? the hub asks
    error = form.locator("[data-error-for=duplicate_of]")
    error.wait_for()
    assert error.inner_text() == "请检查：必填"
    assert "duplicate_of" in (error.get_attribute("title") or "")
    pages.shot(page, "duplicate-of-missing")
    form.locator("input[name=duplicate_of]").fill(original)
    form.locator("button[type=submit]").click()
    page.wait_for_selector("#request-head .s-cancelled")
    assert live_hub.api("GET", f"/api/v1/requests/{repeat}")["state"] == "cancelled"
    _item(page, "queue", repeat).wait_for(state="detached", timeout=LIVE_MS)


def test_notices_and_a_squad_offline_with_work_appear_live(
    pages: Any, live_hub: LiveHub, requests: Requests, phones: Phones
) -> None:
    page = _console(pages, "center", "zh")
    before = int(page.locator("#n-notices").inner_text())
    # No power squad at all: nobody takes it within its accept limit (300 s x 0.02).
    waiting = requests.create(34.64, 112.47, "power_outage", "整条街停电")
    page.wait_for_selector(f".toast[data-request='{waiting}']", timeout=20_000)
    page.wait_for_function(f"Number(document.querySelector('#n-notices').textContent) > {before}")
    page.click("#tab-notices")
    _item(page, "notices", waiting).wait_for()
    _item(page, "queue", waiting).wait_for(state="attached")
    assert "overdue" in (_item(page, "queue", waiting).get_attribute("class") or "")

    squad = phones.connect("water", "供水抢修三队", 34.655, 112.46)
    held = requests.create(34.652, 112.465, "water_outage", "小区停水")
    offer = squad.offer(held)
    squad.accept(offer.assignment)
    squad.enroute(offer.assignment)
    squad.drive([(34.655 - 0.0007 * i, 112.46 + 0.001 * i) for i in range(1, 5)])
    squad.close()  # gone, holding the request
    page.click("#tab-offline")
    row = page.locator("#pane-offline li.offline", has_text=squad.id)
    row.wait_for(timeout=LIVE_MS)
    assert held in row.inner_text()
    row.locator(f"[data-open='{held}']").click()
    page.wait_for_selector(f"#request-head:has-text('{held}')")
    page.wait_for_selector("#timeline .t-squad_offline")
    # People call the squad by its name; the detail keeps its id beside it for the record.
    fact = page.locator("#request-facts dd[data-fact=squad]").inner_text()
    assert "供水抢修三队" in fact and squad.id in fact
    assert "供水抢修三队" in page.locator("#timeline").inner_text()
    assert "供水抢修三队" in (_item(page, "queue", held).text_content() or "")
    page.wait_for_function("document.querySelectorAll('#map .squad-marker.lost').length === 1")
    pages.shot(page, "offline-squad-and-its-last-position")
    page.click("#tab-notices")
    pages.shot(page, "notices-by-level")


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_unit_desk_sees_only_its_unit(pages: Any, requests: Requests, lang: str) -> None:
    water = requests.create(34.66, 112.44, "water_quality", "自来水发黄")
    gas = requests.create(34.66, 112.44, "gas_outage", "燃气停供")
    page = _console(pages, "unit", lang)  # the water unit's desk
    pages.watch(page).allow(rf"\b403\b.*/api/v1/requests/{gas}")
    pages.watch(page).allow(r"\b422\b.*/notes")
    _item(page, "queue", water).wait_for()
    queue = page.locator("#pane-queue").inner_text()
    assert gas not in queue
    assert page.locator("#unit-filter-box").is_hidden()  # its own unit, nothing to choose
    water_name = "洛阳市自来水公司" if lang == "zh" else "Luoyang Water Supply Company"
    assert water_name in page.locator("#who").inner_text()
    # the unit's own desk, not the center's supervision console
    heading = page.locator("header h1").inner_text()
    assert water_name in heading and ("督办台" not in heading and "Supervision" not in heading)
    _item(page, "queue", water).click()
    page.wait_for_selector(f"#request-head:has-text('{water}')")
    actions = page.locator("#actions button")
    assert [actions.nth(i).get_attribute("data-action") for i in range(actions.count())] == ["note"]
    page.click("#actions [data-action=note]")
    form = page.locator("#note-form")
    form.locator("button[type=submit]").click()
    form.locator("[data-error-for=note]").wait_for()
    form.locator("textarea[name=note]").fill("已联系水厂化验")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("#timeline .t-note:has-text('已联系水厂化验')")
    pages.shot(page)

    page.goto(f"/center.html#{gas}")  # another unit's request: not shown
    page.wait_for_selector(f"#detail-empty:visible:has-text('{gas}')")
    assert page.locator("#request").is_hidden()


def test_a_resolved_request_is_reopened_from_the_console(
    pages: Any, live_hub: LiveHub, requests: Requests, phones: Phones
) -> None:
    squad = phones.connect("sanitation", "环卫一队", 34.63, 112.43)
    request_id = requests.create(34.631, 112.431, "garbage_uncollected", "垃圾三天没清运")
    offer = squad.offer(request_id)
    for step in (squad.accept, squad.enroute, squad.arrive):
        step(offer.assignment)
    squad.resolve(offer.assignment, "已清运")
    page = _console(pages, "center", "en")
    page.goto(f"/center.html#{request_id}")
    page.wait_for_selector("#request-head .s-resolved")
    actions = page.locator("#actions button")
    assert [actions.nth(i).get_attribute("data-action") for i in range(actions.count())] == [
        "reopen",
        "note",
    ]
    page.click("#actions [data-action=reopen]")
    form = page.locator("#reopen-form")
    form.locator("textarea[name=note]").fill("群众回访：仍有垃圾")
    form.locator("button[type=submit]").click()
    squad.offer(request_id)  # back to its unit: the squad is offered it again
    page.wait_for_selector("#timeline .t-reopened")
    page.wait_for_selector("#request-head .s-offered")
    pages.shot(page)


# The page's sockets, seen from the test: it can drop the feed and hold the reconnection.
FEED_GATE = """
(() => {
  const Native = window.WebSocket;
  const gate = (window.__feed = { sockets: [], hold: false });
  window.WebSocket = function (url, protocols) {
    const socket = new Native(gate.hold ? "ws://127.0.0.1:9/held" : url, protocols);
    gate.sockets.push(socket);
    return socket;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
})();
"""


def test_the_feed_resumes_after_a_drop_and_brings_what_happened_meanwhile(
    pages: Any, live_hub: LiveHub, requests: Requests
) -> None:
    request_id = requests.create(34.61, 112.40, "drain_blocked", "雨水井堵塞")
    page = _console(pages, "center", "zh")
    pages.watch(page).allow(r"127\.0\.0\.1:9/held")  # the reconnections held back below
    page.add_init_script(FEED_GATE)
    page.goto(f"/center.html#{request_id}")
    page.wait_for_selector("#status[data-state=live]", timeout=LIVE_MS)
    page.wait_for_selector(f"#request-head:has-text('{request_id}')")
    page.evaluate("window.__feed.hold = true; window.__feed.sockets.at(-1).close()")
    page.wait_for_selector("#status[data-state=stale]", timeout=LIVE_MS)
    note = {"note": "断线期间添加的备注"}
    live_hub.api("POST", f"/api/v1/requests/{request_id}/notes", note, expect=201)
    page.evaluate("window.__feed.hold = false")
    page.wait_for_selector("#status[data-state=live]", timeout=20_000)
    # Only the resumed feed brings it: nothing else reloads the open request.
    page.wait_for_selector("#timeline .t-note:has-text('断线期间添加的备注')", timeout=LIVE_MS)
    assert page.locator("#timeline .t-note").count() == 1  # once, not twice
    pages.shot(page)


def test_a_squads_name_on_the_request_map_is_text_not_markup(
    pages: Any, requests: Requests, phones: Phones
) -> None:
    """Leaflet puts a string tooltip in as HTML; a squad's name is set by a person (an
    admin) and shown to every center operator: a name made of markup must show as text
    (one that was a meta refresh sent the console to another site)."""
    name = '<img src="/favicon.ico" id="injected">W<b id="bold">9</b>'
    squad = phones.connect("water", name, 34.662, 112.452)
    request_id = requests.create(34.6621, 112.4521, "water_outage", "停水")
    offer = squad.offer(request_id)
    squad.accept(offer.assignment)
    page = _console(pages, "center", "en")
    page.goto(f"/center.html#{request_id}")
    page.wait_for_selector("#map .squad-marker:not(.lost)", timeout=LIVE_MS)
    page.hover("#map .squad-marker:not(.lost)")
    tip = page.locator(".leaflet-tooltip", has_text="W").last
    tip.wait_for(timeout=LIVE_MS)
    assert name in tip.inner_text()
    assert page.locator("#injected, #bold").count() == 0
