"""The ledger's HTTP endpoints (the app in process, its SQLite ledger recording in the hub):
the new filters and lists, paging, a unit desk confined to its unit, 422 naming the field;
a request whose live state left Redis is answered from the ledger."""

from __future__ import annotations

from typing import Any

import httpx

from server.store import keys
from tests.helpers import XIGONG, auth, desk_auth, eventually

CENTER = auth("center")


async def _request(app: httpx.AsyncClient, phone: str) -> str:
    response = await app.post(
        "/api/v1/requests",
        headers=auth("calltaker"),
        json={
            "caller_phone": phone,
            "category": "water_main_burst",
            "description": "pipe burst on the street",
            "lat": XIGONG[0],
            "lon": XIGONG[1],
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _get(app: httpx.AsyncClient, path: str, headers: dict[str, str], **params: Any) -> Any:
    response = await app.get(path, headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_filters_lists_and_paging(app: httpx.AsyncClient) -> None:
    first = await _request(app, "13900000001")
    second = await _request(app, "13900000002")
    third = await _request(app, "13900000003")
    cancel = await app.post(
        f"/api/v1/requests/{second}/cancel",
        headers=CENTER,
        json={"reason": "duplicate", "note": "the same burst", "duplicate_of": first},
    )
    assert cancel.status_code == 200, cancel.text
    noted = await app.post(
        f"/api/v1/requests/{third}/notes", headers=CENTER, json={"note": "caller rang again"}
    )
    assert noted.status_code == 201, noted.text

    async def recorded() -> bool:
        actions = await _get(app, "/api/v1/ledger/actions", CENTER)
        return len(actions) == 2

    await eventually(recorded)
    by_phone = await _get(app, "/api/v1/ledger/requests", CENTER, caller_phone="13900000002")
    assert [(r["id"], r["cancel_reason"], r["duplicate_of"]) for r in by_phone] == [
        (second, "duplicate", first)
    ]
    actions = await _get(app, "/api/v1/ledger/actions", CENTER)
    assert [(a["request_id"], a["action"], a["by"]) for a in actions] == [
        (third, "note", "center:bootstrap-center"),
        (second, "cancelled", "center:bootstrap-center"),
    ]
    assert await _get(app, "/api/v1/ledger/actions", CENTER, action="note", limit=1, offset=1) == []
    assert await _get(app, "/api/v1/ledger/requests", CENTER, squad="S-none") == []
    assert await _get(app, "/api/v1/ledger/requests", CENTER, notice="any") == []
    assert await _get(app, "/api/v1/ledger/requests", CENTER, overdue="any") == []
    assert await _get(app, "/api/v1/ledger/notices", CENTER, state="open") == []

    # Paged: two pages of one, in the same order as the whole.
    whole = [r["id"] for r in await _get(app, "/api/v1/ledger/requests", CENTER)]
    assert whole == [first, second, third]
    pages = [
        r["id"]
        for offset in (0, 1)
        for r in await _get(app, "/api/v1/ledger/requests", CENTER, limit=1, offset=offset)
    ]
    assert pages == whole[:2]
    events = await _get(app, f"/api/v1/ledger/requests/{second}/events", CENTER, limit=2)
    assert [e["type"] for e in events] == ["received", "queued"]

    messages = await _get(app, "/api/v1/ledger/messages", CENTER, request=first)
    assert messages and messages[0]["phone"] == "*******0001"
    assert messages[0]["queued_by"] == "system:citizen"


async def test_a_unit_desk_reads_only_its_unit(app: httpx.AsyncClient) -> None:
    water, gas = await desk_auth(app, "water"), await desk_auth(app, "gas")
    request_id = await _request(app, "13900000009")
    note = await app.post(
        f"/api/v1/requests/{request_id}/notes", headers=CENTER, json={"note": "checked"}
    )
    assert note.status_code == 201

    async def recorded() -> bool:
        return bool(await _get(app, "/api/v1/ledger/actions", water))

    await eventually(recorded)
    for path in ("requests", "notices", "actions", "messages"):
        assert await _get(app, f"/api/v1/ledger/{path}", gas) == [], path
        other = await app.get(f"/api/v1/ledger/{path}", headers=gas, params={"unit": "water"})
        assert other.status_code == 403, (path, other.text)
    assert [a["request_id"] for a in await _get(app, "/api/v1/ledger/actions", water)] == [
        request_id
    ]
    assert await _get(app, "/api/v1/ledger/messages", water, request=request_id)


async def test_bad_filter_values_are_a_422_naming_the_field(app: httpx.AsyncClient) -> None:
    cases = [
        ("requests", {"overdue": "soon"}, "overdue"),
        ("requests", {"notice": "late"}, "notice"),
        ("requests", {"notice_level": "0"}, "notice_level"),
        ("requests", {"caller_phone": "call me"}, "caller_phone"),
        ("requests", {"squad": "../x"}, "squad"),
        ("requests", {"limit": "100000"}, "limit"),
        ("requests", {"offset": "-1"}, "offset"),
        ("requests", {"colour": "red"}, "colour"),
        ("requests", {"state": "nosuch"}, "state"),  # no state of the lifecycle: matches nothing
        ("notices", {"kind": "soon"}, "kind"),
        ("notices", {"state": "half"}, "state"),
        ("notices", {"level": "x"}, "level"),
        ("actions", {"action": "resolved"}, "action"),
        ("actions", {"by": "two words"}, "by"),
        ("actions", {"request": "R1"}, "request"),
        ("messages", {"outcome": "lost"}, "outcome"),
        ("messages", {"since": "inf"}, "since"),
        ("requests/20261130-000001/events", {"limit": "0"}, "limit"),
        # an unknown unit is a 422, as on the queue (it once matched nothing: 200 [])
        ("requests", {"unit": "nope"}, "unit"),
        ("notices", {"unit": "nope"}, "unit"),
        ("actions", {"unit": "nope"}, "unit"),
        ("export.csv", {"unit": "nope"}, "unit"),
    ]
    for path, params, field in cases:
        response = await app.get(f"/api/v1/ledger/{path}", headers=CENTER, params=params)
        assert response.status_code == 422, (path, params, response.text)
        assert field in response.json()["error"]["fields"], (path, params, response.text)
    audit = await app.get("/api/v1/audit", headers=auth("admin"), params={"offset": "x"})
    assert audit.status_code == 422 and "offset" in audit.json()["error"]["fields"]
    export = await app.get("/api/v1/ledger/export.csv", headers=CENTER, params={"state": "nosuch"})
    assert export.status_code == 422 and "state" in export.json()["error"]["fields"]
    queued = await app.get("/api/v1/ledger/requests", headers=CENTER, params={"state": "queued"})
    assert queued.status_code == 200
    unknown = await app.get("/api/v1/ledger/requests/20000101-000001/events", headers=CENTER)
    assert unknown.status_code == 404  # not [] as if it had no events yet
    # A caller's huge input is not echoed whole in the error.
    huge = await app.get("/api/v1/requests/" + "9" * 5000, headers=CENTER)
    assert huge.status_code == 404 and len(huge.text) < 600, huge.text[:200]
    for week in ("2026-W54", "2026-W00"):  # the same answer as the circular's
        answered = await app.get("/api/v1/spotchecks", headers=CENTER, params={"week": week})
        assert answered.status_code == 422 and "week" in answered.json()["error"]["fields"]
    nope = await app.get("/api/v1/spotchecks", headers=CENTER, params={"unit": "nope"})
    assert nope.status_code == 422 and "unit" in nope.json()["error"]["fields"]


async def test_a_request_whose_live_state_left_is_answered_from_the_ledger(apps: Any) -> None:
    """The hub's writer sweeps too (DISPATCH_LIVE_RETENTION_H): once recorded and its caller
    told, a closed request leaves Redis and GET /requests/{id} answers from the ledger."""
    app = await apps.start(live_retention_h=0.0005)  # 1.8 s
    redis = apps.started[0].app.state.components.redis
    request_id = await _request(app, "13900000010")
    cancel = await app.post(
        f"/api/v1/requests/{request_id}/cancel",
        headers=CENTER,
        json={"reason": "withdrawn", "note": "fixed itself"},
    )
    assert cancel.status_code == 200, cancel.text
    live = await _get(app, f"/api/v1/requests/{request_id}", CENTER)
    assert "archived" not in live

    async def dropped() -> bool:
        return not await redis.exists(keys.request("water", request_id))

    await eventually(dropped, timeout_s=30)
    archived = await _get(app, f"/api/v1/requests/{request_id}", CENTER)
    assert archived["archived"] is True
    assert (archived["state"], archived["unit"], archived["caller_phone"]) == (
        "cancelled",
        "water",
        "13900000010",
    )
    assert [e["type"] for e in archived["timeline"]] == [e["type"] for e in live["timeline"]]
    assert set(archived["deadlines"]) == {"accept_by", "arrive_by", "resolve_by"}
    gas = await desk_auth(app, "gas")
    assert (await app.get(f"/api/v1/requests/{request_id}", headers=gas)).status_code == 403
    water = await desk_auth(app, "water")
    assert (await app.get(f"/api/v1/requests/{request_id}", headers=water)).status_code == 200
    missing = await app.get("/api/v1/requests/20991231-000001", headers=CENTER)
    assert missing.status_code == 404
