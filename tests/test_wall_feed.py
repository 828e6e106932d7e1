"""The wall map's live feed (/ws/map): a snapshot, then deltas of what changed about once a
second; the day's figures; a ticker without callers' data; who may watch."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from dispatch_field import protocol
from dispatch_field.codes import CloseCode
from server.wallmap.figures import local_midnight
from server.wallmap.state import BUSY, ON_DUTY, MapState, delta
from server.wallmap.ticker import Ticker, ticker_item
from tests.conftest import Hubs
from tests.helpers import XIGONG, Api, auth, desk_token, online_squad

# ---- pure ---------------------------------------------------------------------------------


def _state(at: float, squads: dict[str, Any], requests: dict[str, Any]) -> MapState:
    return MapState(at, squads, requests)


def test_a_delta_carries_only_what_changed() -> None:
    a = ("a", "water", 34.1, 112.1, ON_DUTY)
    b = ("b", "water", 34.2, 112.2, ON_DUTY)
    before = _state(1.0, {"a": a, "b": b}, {"r1": {"id": "r1", "state": "queued"}})
    moved = ("a", "water", 34.15, 112.1, ON_DUTY)
    c = ("c", "gas", 34.3, 112.3, ON_DUTY | BUSY)
    after = _state(
        2.0,
        {"a": moved, "c": c},
        {"r1": {"id": "r1", "state": "offered"}, "r2": {"id": "r2", "state": "queued"}},
    )
    assert delta(before, after) == {
        "t": "delta",
        "at": 2.0,
        "squads": [moved, c],
        "gone": ["b"],
        "requests": [{"id": "r1", "state": "offered"}, {"id": "r2", "state": "queued"}],
    }
    assert delta(after, _state(3.0, {"a": moved, "c": c}, {})) == {
        "t": "delta",
        "at": 3.0,
        "closed": ["r1", "r2"],
    }
    assert delta(after, after) == {"t": "delta", "at": 2.0}  # a quiet second


def test_the_ticker_shows_no_callers_data() -> None:
    event = {
        "type": "received",
        "request": "20261130-000001",
        "at": 1.5,
        "by": "calltaker:alice",
        "caller_phone": "13800000000",
        "description": "my neighbour's pipe",
        "address": "1 Some Road",
        "category": "water_main_burst",
    }
    item = ticker_item("water", "1-0", event)
    assert item == {
        "type": "received",
        "request": "20261130-000001",
        "at": 1.5,
        "by": "calltaker",
        "category": "water_main_burst",
        "unit": "water",
        "id": "1-0",
    }
    assert ticker_item("water", "2-0", {"type": "citizen_message_delivered"}) is None
    ticker = Ticker()
    for n in range(40):
        ticker.add({"n": n})
    assert [i["n"] for i in ticker.take()] == list(range(10, 40))
    assert ticker.take() == [] and len(ticker.latest) == 30


def test_the_day_starts_at_the_citys_midnight() -> None:
    zone = ZoneInfo("Asia/Shanghai")
    noon = datetime(2026, 11, 30, 12, 0, tzinfo=zone).timestamp()
    assert local_midnight(noon, zone) == datetime(2026, 11, 30, tzinfo=zone).timestamp()


# ---- a real hub ---------------------------------------------------------------------------


def _url(hub: Any) -> str:
    return hub.ws.replace("/ws/field", "/ws/map")


async def _next(ws: ClientConnection, timeout_s: float = 10.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout_s))  # type: ignore[no-any-return]


async def _until(ws: ClientConnection, wanted: Any, timeout_s: float = 15.0) -> dict[str, Any]:
    """The first delta for which ``wanted(delta)`` is true."""

    async def read() -> dict[str, Any]:
        while True:
            message = await _next(ws)
            if message["t"] == "delta" and wanted(message):
                return message

    return await asyncio.wait_for(read(), timeout_s)


async def test_a_wall_gets_a_snapshot_then_what_changed(hubs: Hubs) -> None:
    hub = hubs.start(offer_window_s=60)
    api = Api(hub)
    wall = await connect(_url(hub), additional_headers=auth("wall"), max_size=None)
    first = await _next(wall)
    assert first["t"] == "snapshot" and first["squads"] == [] and first["requests"] == []
    assert first["figures"]["open"] == 0 and first["figures"]["dispatched_today"] == 0
    assert first["figures"]["median_arrival_s"] is None

    squad = await online_squad(api, hub, *XIGONG, name="near")
    quiet = await online_squad(api, hub, XIGONG[0] + 0.05, XIGONG[1], name="far")
    ids: set[str] = set()
    while ids != {squad.squad, quiet.squad}:
        ids |= {row[0] for row in (await _until(wall, lambda d: "squads" in d))["squads"]}

    # one squad moves: the next delta carries that squad only
    await squad.pos(XIGONG[0] + 0.001, XIGONG[1])
    moved = await _until(wall, lambda d: "squads" in d)
    assert [row[0] for row in moved["squads"]] == [squad.squad]
    assert moved["squads"][0][2] == pytest.approx(XIGONG[0] + 0.001, abs=1e-5)

    # a request: its item, the open count, and a ticker line without the caller
    created = await api.request(*XIGONG)
    opened = await _until(wall, lambda d: "requests" in d and "figures" in d)
    assert opened["requests"][0]["id"] == created["id"]
    assert opened["figures"]["open"] == 1
    offer = await squad.next_frame(protocol.Offer)
    await squad.accept(offer.assignment)
    await squad.arrive(offer.assignment)

    def arrived(d: dict[str, Any]) -> bool:
        return d.get("figures", {}).get("arrived_today") == 1

    figures = (await _until(wall, arrived))["figures"]
    assert figures["dispatched_today"] == 1
    assert 0 <= figures["median_arrival_s"] < 60
    snapshot_wall = await connect(_url(hub), additional_headers=auth("center"), max_size=None)
    again = await _next(snapshot_wall)
    assert again["t"] == "snapshot" and again["figures"]["arrived_today"] == 1
    lines = [line for line in again["ticker"] if line.get("request") == created["id"]]
    assert {"received", "offered", "accepted", "arrived"} <= {line["type"] for line in lines}
    assert "13800000000" not in json.dumps(again) and "pipe burst" not in json.dumps(again)

    # the squad leaves: gone
    await quiet.close()
    await _until(wall, lambda d: quiet.squad in d.get("gone", []) or _off(d, quiet.squad))
    for ws in (wall, snapshot_wall):
        await ws.close()
    await squad.close()
    await api.close()


def _off(message: dict[str, Any], squad_id: str) -> bool:
    return any(row[0] == squad_id and not row[4] & ON_DUTY for row in message.get("squads", []))


async def _closed_with(hub: Any, headers: dict[str, str]) -> int | None:
    ws = await connect(_url(hub), additional_headers=headers)
    try:
        await asyncio.wait_for(ws.recv(), 10)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    return None


async def test_who_may_watch_the_map(hubs: Hubs) -> None:
    hub = hubs.start()
    api = Api(hub)
    assert await _closed_with(hub, {}) == CloseCode.AUTH_FAILED
    assert await _closed_with(hub, {"Authorization": "Bearer wrong-token-1234"}) == 4100
    desk = await desk_token(api.http, "water")
    assert await _closed_with(hub, {"Authorization": f"Bearer {desk}"}) == CloseCode.FORBIDDEN
    for role in ("wall", "center", "calltaker", "admin"):
        ws = await connect(_url(hub), additional_headers=auth(role), max_size=None)
        assert (await _next(ws))["t"] == "snapshot", role
        await ws.close()
    await api.close()


async def test_the_days_figures_over_http(hubs: Hubs) -> None:
    hub = hubs.start()
    api = Api(hub)
    await api.request(*XIGONG)
    answer = await api.http.get("/api/v1/map/figures", headers=auth("wall"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["open"] == 1 and body["dispatched_today"] == 0
    assert body["day"] == datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()
    assert (await api.http.get("/api/v1/map/figures")).status_code == 401
    desk = await desk_token(api.http, "water")
    refused = await api.http.get("/api/v1/map/figures", headers={"Authorization": f"Bearer {desk}"})
    assert refused.status_code == 403
    await api.close()


async def test_a_wall_that_keeps_talking_is_closed(hubs: Hubs) -> None:
    """The map says nothing after it connects: a few stray frames pass, a stream of them
    (once 20,000 frames of 60 KB in 12 s, on a wall's 90-day session) closes the socket."""
    hub = hubs.start()
    wall = await connect(_url(hub), additional_headers=auth("wall"), max_size=None)
    assert (await _next(wall))["t"] == "snapshot"
    for _ in range(3):  # stray: harmless
        await wall.send(b"x")
    await asyncio.sleep(0.3)
    assert wall.close_code is None
    with contextlib.suppress(ConnectionClosed):
        for _ in range(50):
            await wall.send(b"\x00" * 60_000)
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.wait_for(wall.recv(), 10)
    assert wall.close_code == CloseCode.RATE_LIMITED
