"""The center console's own endpoints (server/api/console.py): a request's squad tracks and
the squads offline while holding work; roles, a unit desk's own unit, bad input; in process
and through a real hub with a real squad client."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import jsonschema

from dispatch_field import protocol
from server.api import openapi
from server.app import create_app
from server.settings import load_settings
from tests.helpers import XIGONG, Api, auth, desk_auth, eventually, online_squad


def _schema(path: str) -> jsonschema.Draft202012Validator:
    document = openapi.document(create_app(load_settings({})).routes)
    content = document["paths"][path]["get"]["responses"]["200"]["content"]
    schema = content["application/json"]["schema"]
    return jsonschema.Draft202012Validator({**schema, "components": document["components"]})


async def _create(http: httpx.AsyncClient, lat: float, lon: float) -> dict[str, Any]:
    created = await http.post(
        "/api/v1/requests",
        headers=auth("calltaker"),
        json={
            "caller_phone": "13800000000",
            "category": "water_main_burst",
            "description": "pipe burst on the street",
            "lat": lat,
            "lon": lon,
        },
    )
    assert created.status_code == 201, created.text
    return created.json()  # type: ignore[no-any-return]


# ---- in process --------------------------------------------------------------------------


async def test_console_endpoints_check_the_role_and_name_the_field_at_fault(
    app: httpx.AsyncClient,
) -> None:
    created = await _create(app, *XIGONG)
    track = f"/api/v1/requests/{created['id']}/track"
    offline = "/api/v1/center/offline-squads"
    for path in (track, offline):
        assert (await app.get(path)).status_code == 401
        for role in ("calltaker", "wall"):
            assert (await app.get(path, headers=auth(role))).status_code == 403, (path, role)
    missing = await app.get("/api/v1/requests/20200101-000001/track", headers=auth("center"))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    for query, field in (("unit=nowhere", "unit"), ("limit=0", "limit"), ("limit=x", "limit")):
        bad = await app.get(f"{offline}?{query}", headers=auth("center"))
        assert bad.status_code == 422, (query, bad.text)
        assert field in bad.json()["error"]["fields"], (query, bad.json())
    unknown = await app.get(f"{offline}?shape=round", headers=auth("center"))
    assert unknown.status_code == 422 and "shape" in unknown.json()["error"]["fields"]


async def test_a_new_requests_track_is_its_scene_with_no_squad_yet(app: httpx.AsyncClient) -> None:
    created = await _create(app, *XIGONG)
    answer = await app.get(f"/api/v1/requests/{created['id']}/track", headers=auth("center"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    _schema("/api/v1/requests/{request_id}/track").validate(body)
    assert body["request"] == created["id"] and body["unit"] == "water"
    assert body["scene"] == {"lat": XIGONG[0], "lon": XIGONG[1]}
    assert body["segments"] == []  # no squad is online: queued
    offline = await app.get("/api/v1/center/offline-squads", headers=auth("center"))
    assert offline.status_code == 200 and offline.json() == []
    _schema("/api/v1/center/offline-squads").validate(offline.json())


async def test_a_unit_desk_sees_tracks_and_offline_squads_of_its_own_unit_only(
    app: httpx.AsyncClient,
) -> None:
    created = await _create(app, *XIGONG)
    water, gas = await desk_auth(app, "water"), await desk_auth(app, "gas")
    track = f"/api/v1/requests/{created['id']}/track"
    assert (await app.get(track, headers=water)).status_code == 200
    assert (await app.get(track, headers=gas)).status_code == 403
    offline = "/api/v1/center/offline-squads"
    assert (await app.get(offline, headers=water)).status_code == 200
    assert (await app.get(f"{offline}?unit=water", headers=water)).status_code == 200
    assert (await app.get(f"{offline}?unit=gas", headers=water)).status_code == 403


# ---- a real hub, a real squad -------------------------------------------------------------


async def test_the_track_follows_the_squad_and_a_silent_squad_is_listed_offline(
    hubs: Any,
) -> None:
    hub = hubs.start(track_interval_s=0.05, offline_alert_s=0.5, offline_after_s=0.5)
    api = Api(hub)
    start = (XIGONG[0] + 0.02, XIGONG[1])  # about 2 km north of the scene
    squad = await online_squad(api, hub, *start, name="供水抢修一队")
    created = await api.request(*XIGONG)
    offer = await squad.next_frame(protocol.Offer)
    assert offer.request.id == created["id"]
    await squad.accept(offer.assignment)
    await squad.enroute(offer.assignment)
    # (rounded as a track keeps them: 6 decimals, about 0.1 m)
    way = [(round(start[0] - 0.002 * step, 6), start[1]) for step in range(1, 6)]
    for lat, lon in way:
        await squad.pos(lat, lon)
        await asyncio.sleep(0.15)  # beyond the sample interval and the write interval

    path = f"/api/v1/requests/{created['id']}/track"

    async def tracked() -> dict[str, Any] | None:
        body: dict[str, Any] = (await api.http.get(path, headers=auth("center"))).json()
        points = body["segments"][0]["points"] if body["segments"] else []
        return body if points and points[-1][0] == way[-1][0] else None

    body = await eventually(tracked)
    _schema("/api/v1/requests/{request_id}/track").validate(body)
    (segment,) = body["segments"]
    assert segment["squad"] == squad.squad and segment["unit"] == "water"
    assert segment["name"] == "供水抢修一队"  # as people call it; the id is for the record
    queue = (await api.http.get("/api/v1/center/queue", headers=auth("center"))).json()
    (item,) = queue["items"]
    assert (item["squad"], item["squad_name"]) == (squad.squad, "供水抢修一队")
    detail = await api.get_request(created["id"])  # as the call-taker's detail shows it
    assert (detail["squad"], detail["squad_name"]) == (squad.squad, "供水抢修一队")
    assert segment["until"] is None  # it holds the request still
    lats = [p[0] for p in segment["points"]]
    assert lats == sorted(lats, reverse=True) and len(lats) >= 3  # heading south, in order
    assert lats[-1] == way[-1][0]

    await squad.close()
    water, gas = await desk_auth(api.http, "water"), await desk_auth(api.http, "gas")
    offline = "/api/v1/center/offline-squads"

    async def listed() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = (await api.http.get(offline, headers=auth("center"))).json()
        return rows

    (row,) = await eventually(listed)
    _schema(offline).validate([row])
    assert row["squad"] == squad.squad and row["unit"] == "water" and row["name"] == "供水抢修一队"
    assert row["requests"] == [
        {"id": created["id"], "state": "en_route", "category": "water_main_burst"}
    ]
    assert row["last_seen"] is not None
    assert row["last_point"]["lat"] == way[-1][0]
    assert [r["squad"] for r in (await api.http.get(offline, headers=water)).json()] == [
        squad.squad
    ]
    assert (await api.http.get(offline, headers=gas)).json() == []
    await api.close()
