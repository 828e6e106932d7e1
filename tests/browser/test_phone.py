"""The squad phone app (/phone/) in a real browser at a phone's size (390x844): signing in with
the squad's token, going on duty with the browser's geolocation, an offer from a request made
through the API, each step reported with its big button and seen through the API, the app
resuming after the hub drops its socket (the hub process restarts), and a step tapped while
offline delivered once. Screenshots in Chinese and English: look at them.

The phone tests have their own hub (restarted by one of them), on its own Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.browser.harness import LiveHub, Squad, start_live_hub
from tests.browser.phone_app import (
    XIGONG,
    Phone,
    card_of,
    go_on_duty,
    open_phone,
    sign_in,
    tap_step,
    until,
    wait_for,
)


@pytest.fixture(scope="module")
def phone_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    hub = start_live_hub(tmp_path_factory.mktemp("phone-hub"))
    yield hub
    hub.stop()


def restart(hub: LiveHub, log_path: Path) -> None:
    """Stop the hub process (its sockets close with 4000, SERVER_RESTART) and start another
    one on the same port, Redis and data: the phones' state is all in Redis."""
    hub.process.stop()
    hub.start_again(log_path)


@pytest.fixture
def phones(
    browser: Any, phone_hub: LiveHub, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Phone]]:
    """Open the phone app in a fresh context at XIGONG with location allowed; every page is
    checked for console errors and failed requests when the test ends."""
    opened: list[Phone] = []

    def open_one(lang: str, zone: str = "Asia/Shanghai") -> Phone:
        phone = open_phone(browser, phone_hub.url, lang, request.node.name, zone=zone)
        opened.append(phone)
        return phone

    yield open_one
    problems = []
    for phone in opened:
        problems += [f"[{phone.lang}] {p}" for p in phone.watch.unexpected()]
        phone.context.close()
    if problems:
        pytest.fail("problems on the phone app:\n" + "\n".join(problems), pytrace=False)


def new_request(hub: LiveHub, category: str) -> dict[str, Any]:
    body = {
        "caller_phone": "13800138000",
        "category": category,
        "description": "路面积水，水管破裂 / water on the road from a burst pipe",
        "lat": XIGONG[0] + 0.002,
        "lon": XIGONG[1] + 0.002,
        "address": "西工区中州中路 12 号",
    }
    return hub.api("POST", "/api/v1/requests", body, expect=201)  # type: ignore[no-any-return]


def state_of(hub: LiveHub, request_id: str) -> str:
    return str(hub.api("GET", f"/api/v1/requests/{request_id}")["state"])


def wait_for_state(hub: LiveHub, request_id: str, state: str, timeout_s: float = 30.0) -> None:
    """Until the request is in ``state`` (as the API says); on time-out the error shows the
    request's state and timeline."""
    try:
        wait_for(lambda: state_of(hub, request_id) == state, "", timeout_s)
    except AssertionError:
        detail = hub.api("GET", f"/api/v1/requests/{request_id}")
        raise AssertionError(
            f"{request_id} never reached {state}: {detail['state']}, {detail['timeline']}"
        ) from None


# ---- the whole job, in each language ------------------------------------------------------

FLOWS = {"zh": ("water", "water_main_burst"), "en": ("power", "power_outage")}


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_sign_in_go_on_duty_take_an_offer_through_to_resolved(
    phones: Callable[..., Phone], phone_hub: LiveHub, lang: str
) -> None:
    unit, category = FLOWS[lang]
    squad = phone_hub.create_squad(unit, f"Phone {lang}")
    phone = phones(lang)
    page = phone.page
    assert page.evaluate("document.documentElement.lang") == ("zh-CN" if lang == "zh" else "en")
    page.wait_for_selector("#signin", state="visible")
    phone.shot("signin")

    sign_in(phone, squad)
    # the token is kept on the phone, never in the URL
    assert squad.token not in page.url
    assert page.evaluate("PhoneStore.get('creds')")["token"] == squad.token
    go_on_duty(phone, phone_hub, squad)
    page.wait_for_selector("#fix-state:has-text('±')")
    phone.shot("on-duty")

    created = new_request(phone_hub, category)
    card = card_of(phone, created["id"])
    assert card.get_attribute("data-state") == "offered"
    countdown = card.locator(".countdown").inner_text()
    assert countdown and any(ch.isdigit() for ch in countdown), countdown
    assert card.locator("a[href^='tel:']").get_attribute("href") == "tel:13800138000"
    assert (
        card.locator("a[href^='geo:']")
        .get_attribute("href")
        .startswith(f"geo:{XIGONG[0] + 0.002},{XIGONG[1] + 0.002}")
    )
    phone.shot("offer")

    tap_step(card, "accept")
    wait_for_state(phone_hub, created["id"], "accepted")
    page.wait_for_selector(f"article.job[data-state=accepted] >> text={created['id']}")
    page.wait_for_selector("article.job .sending", state="detached")  # the hub said ok
    phone.shot("accepted")

    tap_step(card, "enroute")
    wait_for_state(phone_hub, created["id"], "en_route")
    # the squad stands within the arrival radius of the scene: the hub may record the arrival
    # itself from its position; otherwise the phone reports it
    if page.locator("article.job button[data-step=arrive]").count():
        tap_step(card, "arrive")
    wait_for_state(phone_hub, created["id"], "on_scene")
    page.wait_for_selector("article.job[data-state=on_scene]")

    tap_step(card, "resolve")
    page.wait_for_selector("#sheet:not([hidden])")
    page.fill("#sheet-text", "阀门已关闭，管道已更换 / valve closed, pipe replaced")
    phone.shot("resolve-note")
    page.click("#sheet-submit")
    wait_for_state(phone_hub, created["id"], "resolved")
    page.wait_for_selector("article.job", state="detached")
    detail = phone_hub.api("GET", f"/api/v1/requests/{created['id']}")
    resolved = [e for e in detail["timeline"] if e.get("type") == "resolved"]
    assert len(resolved) == 1 and "valve closed" in str(resolved[0])
    phone.shot("resolved")


def test_an_arrival_the_hub_records_from_the_position_shows_on_the_phone(
    phones: Callable[..., Phone], phone_hub: LiveHub
) -> None:
    """On its way, the squad reaches the scene: the hub records the arrival from its
    position and tells the phone, whose card moves on scene by itself (it once went on
    showing "on the way", with "arrived" as its next step)."""
    squad = phone_hub.create_squad("water", "Phone arrival")
    phone = phones("en")
    page = phone.page
    sign_in(phone, squad)
    go_on_duty(phone, phone_hub, squad)
    created = new_request(phone_hub, "water_main_burst")  # about 280 m away
    card = card_of(phone, created["id"])
    tap_step(card, "accept")
    wait_for_state(phone_hub, created["id"], "accepted")
    tap_step(card, "enroute")
    wait_for_state(phone_hub, created["id"], "en_route")
    page.wait_for_selector("article.job[data-state=en_route] button[data-step=arrive]")
    phone.context.set_geolocation(
        {"latitude": XIGONG[0] + 0.002, "longitude": XIGONG[1] + 0.002, "accuracy": 8}
    )
    page.wait_for_selector("article.job[data-state=on_scene]", timeout=30_000)
    assert page.locator("article.job button[data-step=arrive]").count() == 0
    assert page.locator("article.job button[data-step=resolve]").count() == 1
    page.get_by_text(phone.text("auto_arrived")).wait_for()
    arrived = [
        e
        for e in phone_hub.api("GET", f"/api/v1/requests/{created['id']}")["timeline"]
        if e["type"] == "arrived"
    ]
    assert [e["by"] for e in arrived] == ["system:auto-arrival"]  # not the phone's own step
    phone.shot("arrived-by-position")


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_promise_a_time_and_not_our_jurisdiction_ask_for_a_reason(
    phones: Callable[..., Phone], phone_hub: LiveHub, lang: str
) -> None:
    unit, category = {"zh": ("gas", "gas_outage"), "en": ("telecom", "telecom_outage")}[lang]
    squad = phone_hub.create_squad(unit, f"Promise {lang}")
    phone = phones(lang)
    page = phone.page
    sign_in(phone, squad)
    go_on_duty(phone, phone_hub, squad)
    created = new_request(phone_hub, category)
    card = card_of(phone, created["id"])
    tap_step(card, "accept")
    wait_for_state(phone_hub, created["id"], "accepted")

    tap_step(card, "defer")
    page.wait_for_selector("#sheet:not([hidden])")
    page.click("#sheet-submit")  # no reason yet
    assert page.locator("#sheet-message").inner_text() == phone.text("reason_needed")
    page.click(".preset[data-hours='4']")
    page.fill("#sheet-text", "需要从仓库调配件 / a spare part must come from the depot")
    phone.shot("promise")
    page.click("#sheet-submit")
    wait_for_state(phone_hub, created["id"], "deferred")
    detail = phone_hub.api("GET", f"/api/v1/requests/{created['id']}")
    promised = detail["deadlines"]["resolve_by"]
    assert 3.5 * 3600 < promised - time.time() < 4.5 * 3600
    page.wait_for_selector("article.job[data-state=deferred]")
    # Promised before arriving: the arrival is still to make, its limit still runs (a new
    # user's trial saw it hidden, and "resolved" offered before the crew set out).
    assert card.locator("button.big.primary").get_attribute("data-step") == "arrive"
    assert phone.text("arrive_by") in card.locator("dl.deadlines").inner_text()
    phone.shot("promised")

    tap_step(card, "dispute")
    page.fill("#sheet-text", "管道属于相邻区管网 / the pipe belongs to the next district")
    page.click("#sheet-submit")
    wait_for_state(phone_hub, created["id"], "disputed")
    page.wait_for_selector("article.job", state="detached")
    phone.shot("disputed")


def test_a_new_phone_for_a_lost_one_signs_in_and_shows_the_work_the_squad_holds(
    phones: Callable[..., Phone], phone_hub: LiveHub
) -> None:
    """A new user's trial of a lost phone: the desk replaced the squad's token, the squad
    signed in on a new phone (its id typed in capitals, as a phone's keyboard offers) and
    saw no job, though it held one. It sees the job, and goes on with it."""
    squad = phone_hub.create_squad("water", "Lost phone")
    lost = phones("en")
    sign_in(lost, squad)
    go_on_duty(lost, phone_hub, squad)
    created = new_request(phone_hub, "water_outage")
    tap_step(card_of(lost, created["id"]), "accept")
    wait_for_state(phone_hub, created["id"], "accepted")
    replaced = phone_hub.api("POST", f"/api/v1/squads/{squad.id}/token", expect=201)
    lost.page.wait_for_selector("#signin-message:not([hidden])")  # signed out, and told why
    assert "unit desk" in lost.page.locator("#signin-message").inner_text()

    new = phones("en")
    capitals = Squad(squad.id.upper(), squad.unit, squad.name, replaced["token"])
    sign_in(new, capitals)
    card = card_of(new, created["id"])
    assert card.get_attribute("data-state") == "accepted"
    new.shot("held-job")
    tap_step(card, "enroute")
    wait_for_state(phone_hub, created["id"], "en_route")


def test_deadlines_are_shown_on_the_citys_clock_whatever_the_phones_zone(
    phones: Callable[..., Phone], phone_hub: LiveHub
) -> None:
    """A phone set to another time zone (a traveller's, or a factory default) still shows
    the deadlines as the center and the caller read them: on the city's clock."""
    squad = phone_hub.create_squad("water", "Zone")
    phone = phones("en", zone="America/New_York")
    sign_in(phone, squad)
    go_on_duty(phone, phone_hub, squad)
    created = new_request(phone_hub, "water_outage")
    card = card_of(phone, created["id"])
    due = card.locator("dl.deadlines dd").first
    due.wait_for()
    at = float(due.get_attribute("data-due") or 0)
    city = datetime.fromtimestamp(at, ZoneInfo("Asia/Shanghai")).strftime("%H:%M")
    elsewhere = datetime.fromtimestamp(at, ZoneInfo("America/New_York")).strftime("%H:%M")
    assert city in due.inner_text() and elsewhere not in due.inner_text()


def test_a_promise_is_typed_on_the_citys_clock_whatever_the_phones_zone(
    phones: Callable[..., Phone], phone_hub: LiveHub
) -> None:
    """The deadlines are shown on the city's clock, so the promised time is typed on it too:
    a phone set to New York promising "9:00 next morning" promises Luoyang's next 9:00, not
    9:00 in New York (the squad would otherwise promise a time 13 hours off), and the sheet
    says which clock it is on."""
    city = ZoneInfo("Asia/Shanghai")
    squad = phone_hub.create_squad("water", "Zone promise")
    phone = phones("en", zone="America/New_York")
    page = phone.page
    sign_in(phone, squad)
    go_on_duty(phone, phone_hub, squad)
    created = new_request(phone_hub, "water_outage")
    card = card_of(phone, created["id"])
    tap_step(card, "accept")
    wait_for_state(phone_hub, created["id"], "accepted")
    tap_step(card, "defer")
    page.wait_for_selector("#sheet:not([hidden])")
    page.click(".preset[data-hours='4']")
    shown = datetime.strptime(page.input_value("#sheet-until-input"), "%Y-%m-%dT%H:%M")
    in_four_hours = datetime.now(city).replace(tzinfo=None) + timedelta(hours=4)
    assert abs(shown - in_four_hours) < timedelta(minutes=2), shown  # the city's wall time
    hint = page.locator("#sheet-until-hint").inner_text()  # which clock, and how far ahead
    assert "city time (GMT+8)" in hint and ("in 3 h" in hint or "in 4 h" in hint), hint
    page.click(".preset[data-hours='tomorrow']")  # the city's next 9:00
    page.fill("#sheet-text", "a spare part must come from the depot")
    page.click("#sheet-submit")
    wait_for_state(phone_hub, created["id"], "deferred")
    promised = phone_hub.api("GET", f"/api/v1/requests/{created['id']}")["deadlines"]["resolve_by"]
    now = datetime.now(city)
    day = now.date() + timedelta(days=0 if now.hour < 9 else 1)
    assert datetime.fromtimestamp(promised, city) == datetime(
        day.year, day.month, day.day, 9, 0, tzinfo=city
    )


# ---- a dropped socket, and a step tapped while offline -----------------------------------------


def test_the_app_resumes_after_the_hub_drops_it_and_an_offline_step_is_delivered_once(
    phones: Callable[..., Phone], phone_hub: LiveHub, tmp_path: Path
) -> None:
    squad = phone_hub.create_squad("housing", "Resume")
    phone = phones("zh")
    page = phone.page
    # Chromium reports each refused reconnection attempt on the console itself: expected
    # while the hub is down or the network is gone.
    phone.watch.allow(r"WebSocket connection to .*/ws/field' failed")
    sign_in(phone, squad)
    go_on_duty(phone, phone_hub, squad)
    created = new_request(phone_hub, "housing_repair")
    card = card_of(phone, created["id"])
    tap_step(card, "accept")
    wait_for_state(phone_hub, created["id"], "accepted")
    page.wait_for_selector("article.job .sending", state="detached")

    # The hub process restarts: it closes the socket (4000); the app shows it and resumes.
    restart(phone_hub, tmp_path / "hub-restarted.log")
    page.wait_for_selector("#link-state[data-state=live]", timeout=40_000)
    assert page.locator("article.job[data-state=accepted]").count() == 1

    # The network goes: the hub drops the socket again, and the phone cannot reconnect.
    phone.context.set_offline(True)
    phone_hub.process.stop()
    page.wait_for_selector("#link-state[data-state=offline]")
    tap_step(card, "enroute")
    page.wait_for_selector("#queued:not([hidden])")
    assert page.locator("#queued").inner_text() == "1 项操作待发送"
    assert page.locator("article.job[data-state=en_route] .sending").count() == 1
    phone.shot("offline-queued")
    assert_down(phone_hub)

    # Back: the hub is up again, the network returns; the queued step goes out with its id.
    phone_hub.start_again(tmp_path / "hub-back.log")
    phone.context.set_offline(False)
    page.wait_for_selector("#link-state[data-state=live]", timeout=40_000)
    page.wait_for_selector("#queued", state="hidden")
    wait_for_state(phone_hub, created["id"], "en_route")
    timeline = phone_hub.api("GET", f"/api/v1/requests/{created['id']}")["timeline"]
    assert [e["type"] for e in timeline].count("en_route") == 1, timeline
    phone.shot("resumed")

    # The app reloaded (closed and opened again) keeps the squad and its work.
    page.reload()
    page.wait_for_selector("#link-state[data-state=live]")
    assert page.locator("article.job[data-state=en_route]", has_text=created["id"]).count() == 1


def assert_down(hub: LiveHub) -> None:
    """The hub is stopped: nothing answers (the step cannot have gone anywhere)."""
    try:
        httpx.get(hub.url + "/api/v1/health", timeout=1)
    except httpx.HTTPError:
        return
    raise AssertionError("the hub still answers")


# ---- installable, and opens without a network ----------------------------------------------


def test_the_app_is_installable_and_opens_without_a_network(
    phones: Callable[..., Phone], phone_hub: LiveHub
) -> None:
    squad = phone_hub.create_squad("telecom", "Offline start")
    phone = phones("en")
    page = phone.page
    # Offline, the profile refresh and the socket fail: that is the point.
    phone.watch.allow(r"WebSocket connection to .*/ws/field' failed")
    phone.watch.allow(r"/api/v1/field/me")
    manifest_url = page.locator("link[rel=manifest]").get_attribute("href")
    manifest = httpx.get(phone_hub.url + manifest_url).json()
    assert manifest["start_url"] == manifest["scope"] == "/phone/"
    assert manifest["display"] == "standalone" and manifest["lang"] == "zh-CN"
    sizes = set()
    for icon in manifest["icons"]:
        answer = httpx.get(phone_hub.url + icon["src"])
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        sizes.add(icon["sizes"])
    assert {"192x192", "512x512"} <= sizes

    sign_in(phone, squad)
    until(page, "navigator.serviceWorker.controller !== null")
    assert page.evaluate("navigator.serviceWorker.controller.scriptURL").endswith("/phone/sw.js")

    phone.context.set_offline(True)
    page.reload()
    page.wait_for_selector("#work:not([hidden])")
    assert page.locator("#squad-name").inner_text() == "Offline start"
    page.wait_for_selector("#link-state[data-state=offline]")
    phone.shot("offline-start")
    phone.context.set_offline(False)
    page.wait_for_selector("#link-state[data-state=live]", timeout=40_000)

    # Signing out asks first, then forgets the squad on this phone.
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#signout")
    page.wait_for_selector("#signin:not([hidden])")
    assert page.evaluate("PhoneStore.get('creds')") is None


# ---- supervision notices (a hub whose limits run 100 times faster) ---------------------------


@pytest.fixture(scope="module")
def fast_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    hub = start_live_hub(tmp_path_factory.mktemp("fast-hub"), time_scale=0.01)
    yield hub
    hub.stop()


def test_a_missed_limit_shows_a_notice_and_the_overdue_deadline(
    browser: Any, fast_hub: LiveHub, request: pytest.FixtureRequest
) -> None:
    """The accept limit of a water main burst (300 s) passes in 3 s here: the offered squad
    gets the supervision notice, shown with the deadline in red; the language switch keeps
    the squad, its work and its notices (the app reloads from the phone's storage)."""
    squad = fast_hub.create_squad("water", "Notice")
    phone = open_phone(browser, fast_hub.url, "zh", request.node.name)
    page, watch = phone.page, phone.watch
    try:
        sign_in(phone, squad)
        go_on_duty(phone, fast_hub, squad)
        created = new_request(fast_hub, "water_main_burst")
        card_of(phone, created["id"])
        page.wait_for_selector("#notices .notice", timeout=30_000)
        notice = page.locator("#notices .notice").first.inner_text()
        assert "接单超时" in notice and created["id"] in notice and "1 级" in notice
        page.wait_for_selector("article.job dd.late")
        phone.shot("notice")

        page.click("#lang")
        page.wait_for_selector("#link-state[data-state=live]")
        assert page.evaluate("document.documentElement.lang") == "en"
        assert "Accept overdue" in page.locator("#notices .notice").first.inner_text()
        assert page.locator("article.job", has_text=created["id"]).count() == 1
        phone.lang = "en"
        phone.shot("notice")
        assert watch.unexpected() == []
    finally:
        phone.context.close()


# ---- Web Push in the service worker ------------------------------------------------------------


def test_a_push_wakes_the_phone_with_a_notification_when_the_app_is_not_on_screen(
    browser: Any, phone_hub: LiveHub, request: pytest.FixtureRequest
) -> None:
    """A push (delivered to the service worker through the browser's DevTools protocol, as
    a push service would) reaches the app on screen as a message, and shows a notification
    in the app's language, with the category's name, when no page of the app is open."""
    squad = phone_hub.create_squad("water", "Push")
    phone = open_phone(
        browser, phone_hub.url, "zh", request.node.name, permissions=("notifications",)
    )
    page, context, watch = phone.page, phone.context, phone.watch
    try:
        sign_in(phone, squad)
        until(page, "navigator.serviceWorker.controller !== null")
        devtools = context.new_cdp_session(page)
        registrations: list[dict[str, Any]] = []
        devtools.on(
            "ServiceWorker.workerRegistrationUpdated",
            lambda event: registrations.extend(event["registrations"]),
        )
        devtools.send("ServiceWorker.enable")
        for _ in range(100):  # Playwright hands over events while it waits, not in a sleep
            if registrations:
                break
            page.wait_for_timeout(100)
        (registration,) = [r for r in registrations if r["scopeURL"].endswith("/phone/")]
        push = {
            "t": "offer",
            "assignment": "A5e1",
            "request": "20261130-000042",
            "category": "water_main_burst",
            "address": "中州路 12 号",
            "respond_by": time.time() + 60,
        }

        def deliver() -> None:
            devtools.send(
                "ServiceWorker.deliverPushMessage",
                {
                    "origin": phone_hub.url,
                    "registrationId": registration["registrationId"],
                    "data": json.dumps(push),
                },
            )

        page.evaluate(
            "navigator.serviceWorker.addEventListener('message', e => { window.seen = e.data })"
        )
        deliver()
        until(page, "window.seen !== undefined")
        assert page.evaluate("window.seen.push.assignment") == "A5e1"
        assert shown(page) == []  # on screen: the socket brings it, no notification

        page.goto("about:blank")  # the app closed
        deliver()
        page.wait_for_timeout(1000)
        page.goto("/phone/")
        assert shown(page) == [["新派单 · 供水管道爆裂", "20261130-000042 · 中州路 12 号", "A5e1"]]
        assert watch.unexpected() == []
    finally:
        context.close()


def shown(page: Any) -> Any:
    """The notifications the app's service worker is showing: [title, body, tag]."""
    return page.evaluate(
        "navigator.serviceWorker.ready.then(r => r.getNotifications())"
        ".then(list => list.map(n => [n.title, n.body, n.tag]))"
    )
