"""The intake console's reads: a caller's earlier requests, the triage preview with possible
duplicates, the gazetteer, the seat's own requests. Pure rules first, then the app in
process (the embedded Redis, a SQLite ledger written by the hub's own ledger writer)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from server.calltaker.duplicates import Seen, box, possible_duplicates
from server.calltaker.reads import phone_forms
from server.store import keys
from tests.conftest import Apps
from tests.helpers import XIGONG, auth, eventually

NOW = 1_800_000_000.0
NEAR = (XIGONG[0] + 0.001, XIGONG[1])  # 111 m north
FAR = (XIGONG[0] + 0.005, XIGONG[1])  # 556 m north


# ---- pure ---------------------------------------------------------------------------------


def _seen(request_id: str, at: tuple[float, float], **extra: Any) -> Seen:
    fields: dict[str, Any] = {
        "category": "water_main_burst",
        "received_at": NOW - 600,
        "state": "queued",
    }
    return Seen(id=request_id, lat=at[0], lon=at[1], **(fields | extra))


def test_a_duplicate_is_the_same_category_close_by_and_recent_nearest_first() -> None:
    seen = [
        _seen("near", NEAR),
        _seen("here", XIGONG, state="resolved"),  # resolved still counts: the call-taker sees
        _seen("far", FAR),
        _seen("other", XIGONG, category="power_outage"),
        _seen("old", XIGONG, received_at=NOW - 7300),
        _seen("cancelled", XIGONG, state="cancelled"),
        _seen("near", NEAR),  # the same request from the ledger and the live state: once
    ]
    found = possible_duplicates(
        "water_main_burst", *XIGONG, seen, now=NOW, radius_m=300, window_s=7200
    )
    assert [p.seen.id for p in found] == ["here", "near"]
    assert found[0].distance_m == 0 and 105 < found[1].distance_m < 115
    wider = possible_duplicates(
        "water_main_burst", *XIGONG, seen, now=NOW, radius_m=600, window_s=8000
    )
    assert [p.seen.id for p in wider] == ["here", "old", "near", "far"]


def test_the_box_holds_the_circle() -> None:
    min_lat, min_lon, max_lat, max_lon = box(*XIGONG, 300)
    assert min_lat < XIGONG[0] - 300 / 111_320 and max_lat > XIGONG[0] + 300 / 111_320
    assert max_lon - XIGONG[1] > 300 / 111_320  # a degree of longitude is shorter here


def test_a_number_is_looked_up_with_and_without_the_country_code() -> None:
    forms = ["+8613800000001", "13800000001", "8613800000001"]
    assert phone_forms("13800000001") == sorted(forms)
    assert phone_forms("+8613800000001") == sorted(forms)
    assert phone_forms("8613800000001") == sorted(forms)
    assert phone_forms("+4420700000") == ["+4420700000"]  # another country's: as typed
    assert "63912345" in phone_forms("+8663912345")


# ---- in process ---------------------------------------------------------------------------


async def _create(
    app: httpx.AsyncClient,
    phone: str = "13800000001",
    at: tuple[float, float] = XIGONG,
    category: str = "water_main_burst",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    response = await app.post(
        "/api/v1/requests",
        headers=headers or auth("calltaker"),
        json={
            "caller_phone": phone,
            "category": category,
            "description": "water running down the street",
            "lat": at[0],
            "lon": at[1],
            "address": "中州中路",
        },
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def _history(app: httpx.AsyncClient, phone: str, role: str = "calltaker") -> Any:
    response = await app.post("/api/v1/callers/history", headers=auth(role), json={"phone": phone})
    assert response.status_code == 200, response.text
    return response.json()


async def _recorded(app: httpx.AsyncClient, request_id: str) -> bool:
    """The ledger has the request (the hub's writer follows Redis)."""
    response = await app.get("/api/v1/ledger/requests", headers=auth("center"))
    return any(row["id"] == request_id for row in response.json())


async def test_a_callers_earlier_requests_come_at_once_and_stay_once_recorded(
    app: httpx.AsyncClient,
) -> None:
    first = await _create(app, "13800000001")
    other = await _create(app, "13900000002", at=FAR)
    second = await _create(app, "+8613800000001", at=NEAR, category="power_outage")
    live = await _history(app, "13800000001")  # before the ledger may have them: live state
    assert [line["id"] for line in live["requests"]] == [second["id"], first["id"]]
    line = live["requests"][1]
    assert line["category"] == "water_main_burst" and line["unit"] == "water"
    assert line["district"] == "xigong" and line["address"] == "中州中路"
    assert "caller_phone" not in line  # the caller's number is not sent back
    await eventually(lambda: _recorded(app, second["id"]))
    recorded = await _history(app, "8613800000001", role="center")
    assert recorded["ledger"] is True
    assert [line["id"] for line in recorded["requests"]] == [second["id"], first["id"]]
    assert other["id"] not in str(recorded)


async def test_a_transferred_call_is_in_the_callers_history_from_the_ledger(
    app: httpx.AsyncClient,
) -> None:
    fire = await _create(app, "13700000003", category="fire")
    assert fire["route"] == "fire"

    async def listed() -> Any:
        lines = (await _history(app, "13700000003"))["requests"]
        return lines if lines else None

    lines = await eventually(listed)
    assert lines[0]["id"] == fire["id"] and lines[0]["state"] == "transferred"
    assert lines[0]["route"] == "fire" and "unit" not in lines[0]


async def test_caller_history_refuses_bad_input_and_other_roles(app: httpx.AsyncClient) -> None:
    path = "/api/v1/callers/history"
    bad = await app.post(path, headers=auth("calltaker"), json={"phone": "12-34"})
    assert bad.status_code == 422 and "phone" in bad.json()["error"]["fields"]
    bad = await app.post(path, headers=auth("calltaker"), json={"phone": "138", "limit": 51})
    assert bad.status_code == 422 and "limit" in bad.json()["error"]["fields"]
    bad = await app.post(path, headers=auth("calltaker"), json={"number": "13800000000"})
    assert bad.status_code == 422 and bad.json()["error"]["fields"]
    assert (await app.post(path, headers=auth("wall"), json={"phone": "138"})).status_code == 403
    assert (await app.post(path, json={"phone": "13800000000"})).status_code == 401
    # A GET with the number in the path does not exist: the number stays out of every URL.
    assert (await app.get(f"{path}/13800000000", headers=auth("calltaker"))).status_code == 404


async def _preview(
    app: httpx.AsyncClient,
    category: str,
    at: tuple[float, float],
    status: int = 200,
) -> Any:
    response = await app.post(
        "/api/v1/requests/preview",
        headers=auth("calltaker"),
        json={"category": category, "lat": at[0], "lon": at[1]},
    )
    assert response.status_code == status, response.text
    return response.json()


async def test_the_preview_runs_the_intakes_triage_and_records_nothing(
    app: httpx.AsyncClient, app_redis: Any
) -> None:
    linkage = await _preview(app, "water_main_burst", XIGONG)
    triaged = (linkage["route"], linkage["unit"], linkage["district"])
    assert triaged == ("linkage", "water", "xigong")
    assert linkage["duplicates"] == [] and linkage["radius_m"] == 300
    police = await _preview(app, "police", XIGONG)
    assert (police["route"], police["unit"], police["district"]) == ("police", None, "xigong")
    outside = await _preview(app, "water_main_burst", (39.9, 116.4), status=422)
    assert outside["error"]["code"] == "outside_city"
    assert set(outside["error"]["fields"]) == {"lat", "lon"}
    unknown = await _preview(app, "alien_landing", XIGONG, status=422)
    assert unknown["error"]["fields"] == {"category": "unknown category"}
    bad = await _preview(app, "water_main_burst", (91.0, 112.0), status=422)
    assert "lat" in bad["error"]["fields"]
    assert await app_redis.hlen(keys.request_units()) == 0  # nothing stored
    assert [key async for key in app_redis.scan_iter(match="*:rq:*")] == []
    # the same answer as the intake itself
    created = await _create(app, at=XIGONG)
    assert (created["route"], created["unit"], created["district"]) == triaged


async def test_a_possible_duplicate_is_shown_before_sending(app: httpx.AsyncClient) -> None:
    created = await _create(app, at=XIGONG)
    near = await _preview(app, "water_main_burst", NEAR)
    assert [d["id"] for d in near["duplicates"]] == [created["id"]]  # live, not yet recorded
    duplicate = near["duplicates"][0]
    assert 105 < duplicate["distance_m"] < 115
    assert duplicate["unit"] == "water" and duplicate["address"] == "中州中路"
    assert (await _preview(app, "water_main_burst", FAR))["duplicates"] == []
    assert (await _preview(app, "water_outage", NEAR))["duplicates"] == []
    await eventually(lambda: _recorded(app, created["id"]))
    both = await _preview(app, "water_main_burst", NEAR)  # ledger and live: listed once
    assert [d["id"] for d in both["duplicates"]] == [created["id"]] and both["ledger"] is True


async def test_a_second_call_about_the_same_fire_shows_the_first(app: httpx.AsyncClient) -> None:
    fire = await _create(app, "13700000004", category="fire")  # transferred: in no open set

    async def shown() -> Any:
        found = (await _preview(app, "fire", NEAR))["duplicates"]
        return found if found else None

    found = await eventually(shown)
    assert found[0]["id"] == fire["id"] and found[0]["state"] == "transferred"


async def test_the_duplicate_rule_is_configurable(apps: Apps) -> None:
    app = await apps.start(duplicate_radius_m=50, duplicate_window_s=3600)
    await _create(app, at=XIGONG)
    answer = await _preview(app, "water_main_burst", NEAR)
    assert answer["duplicates"] == [] and answer["radius_m"] == 50
    assert answer["window_s"] == 3600


async def test_places_are_looked_up_by_the_hub(app: httpx.AsyncClient) -> None:
    found = await app.get("/api/v1/places", params={"q": "丽景"}, headers=auth("calltaker"))
    assert found.status_code == 200
    first = found.json()[0]
    assert first["name_zh"] == "丽景门" and first["district"] == "laocheng"
    assert 34.6 < first["lat"] < 34.7 and 112.4 < first["lon"] < 112.5
    initials = await app.get("/api/v1/places", params={"q": "wcgy"}, headers=auth("center"))
    assert initials.json()[0]["name_zh"] == "王城公园"
    many = await app.get("/api/v1/places", params={"q": "l", "limit": 20}, headers=auth("center"))
    assert len(many.json()) == 20


@pytest.mark.parametrize(
    ("params", "field"),
    [({}, "q"), ({"q": ""}, "q"), ({"q": "x" * 51}, "q"), ({"q": "l", "limit": 21}, "limit")],
)
async def test_places_refuse_bad_input_naming_the_field(
    app: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    answer = await app.get("/api/v1/places", params=params, headers=auth("calltaker"))
    assert answer.status_code == 422
    assert field in answer.json()["error"]["fields"]


async def test_places_are_for_call_takers_and_the_center(app: httpx.AsyncClient) -> None:
    path = "/api/v1/places?q=ljm"
    assert (await app.get(path, headers=auth("wall"))).status_code == 403
    assert (await app.get(path)).status_code == 401


async def test_categories_carry_their_pinyin(app: httpx.AsyncClient) -> None:
    categories = (await app.get("/api/v1/categories", headers=auth("calltaker"))).json()
    water = next(c for c in categories if c["code"] == "water_main_burst")
    assert water["pinyin"] == "gong shui guan dao bao lie"


async def _account(app: httpx.AsyncClient, username: str) -> dict[str, str]:
    """A second call-taker, with an API token."""
    made = await app.post(
        "/api/v1/accounts",
        headers=auth("admin"),
        json={"username": username, "name": username, "role": "calltaker", "password": "x" * 12},
    )
    assert made.status_code == 201, made.text
    token = await app.post(
        f"/api/v1/accounts/{username}/tokens", headers=auth("admin"), json={"label": "test"}
    )
    assert token.status_code == 201, token.text
    return {"Authorization": f"Bearer {token.json()['token']}"}


async def test_the_seat_sees_its_own_requests_with_their_live_state(
    app: httpx.AsyncClient, app_redis: Any
) -> None:
    mine = [await _create(app, at=XIGONG), await _create(app, at=FAR, category="fire")]
    bob = await _account(app, "bob")
    theirs = await _create(app, headers=bob)

    async def listed() -> Any:
        answer = await app.get("/api/v1/intake/recent", headers=auth("calltaker"))
        assert answer.status_code == 200, answer.text
        lines = answer.json()["requests"]
        return lines if len(lines) == 2 else None

    lines = await eventually(listed)
    assert [line["id"] for line in lines] == [mine[1]["id"], mine[0]["id"]]
    assert lines[0]["state"] == "transferred" and lines[1]["state"] == "queued"
    # The live state wins over the ledger's: a change in Redis shows at once.
    await app_redis.hset(keys.request("water", mine[0]["id"]), "state", "on_scene")
    again = (await app.get("/api/v1/intake/recent", headers=auth("calltaker"))).json()
    assert again["requests"][1]["state"] == "on_scene"
    bobs = await app.get("/api/v1/intake/recent?limit=5", headers=bob)

    async def bob_listed() -> Any:
        lines = (await app.get("/api/v1/intake/recent", headers=bob)).json()["requests"]
        return lines or None

    assert bobs.status_code == 200
    assert [line["id"] for line in await eventually(bob_listed)] == [theirs["id"]]


async def test_the_seats_list_is_a_call_takers_own(app: httpx.AsyncClient) -> None:
    path = "/api/v1/intake/recent"
    assert (await app.get(path, headers=auth("center"))).status_code == 403
    assert (await app.get(path)).status_code == 401
    bad = await app.get(path + "?limit=0", headers=auth("calltaker"))
    assert bad.status_code == 422 and "limit" in bad.json()["error"]["fields"]
