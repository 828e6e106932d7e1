"""Bad input of every kind gets a clear, specific error and leaves state intact."""

from __future__ import annotations

import asyncio
import time

import httpx
import msgspec
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from dispatch_field import protocol
from dispatch_field.codes import CloseCode
from server.actions import NewRequest
from server.api.common import error_handlers
from server.city import load_city
from server.components import build_components
from server.settings import Settings
from server.store import keys
from tests.helpers import XIGONG, Api, auth, online_squad

GOOD = {
    "caller_phone": "13800000000",
    "category": "water_main_burst",
    "description": "pipe burst",
    "lat": XIGONG[0],
    "lon": XIGONG[1],
}


def _with(**changes: object) -> dict[str, object]:
    body = dict(GOOD)
    for name, value in changes.items():
        if value is None:
            body.pop(name)
        else:
            body[name] = value
    return body


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (_with(caller_phone=None), 422, "invalid", "caller_phone"),
        (_with(category=None), 422, "invalid", "category"),
        (_with(lat=None), 422, "invalid", "lat"),
        (_with(lat=91.5), 422, "invalid", "lat"),
        (_with(lon=-181), 422, "invalid", "lon"),
        (_with(lat="north"), 422, "invalid", "lat"),
        (_with(caller_phone="call me"), 422, "invalid", "caller_phone"),
        (_with(description=""), 422, "invalid", "description"),
        (_with(description="  \t "), 422, "invalid", "description"),  # says nothing
        (_with(priority="high"), 422, "invalid", "priority"),
        (_with(category="alien_landing"), 422, "unknown_category", "category"),
        (_with(lat=39.9, lon=116.4), 422, "outside_city", "lat"),  # Beijing
        # PostgreSQL's text takes no NUL: refused at the door, named, not a 500 later
        (_with(description="pipe\x00burst"), 422, "invalid", "description"),
        (_with(address="Zhongzhou Road 1\x00"), 422, "invalid", "address"),
    ],
)
async def test_bad_request_bodies_are_refused_with_the_field(
    app, app_redis, body, status, code, field
):
    response = await app.post("/api/v1/requests", headers=auth("calltaker"), json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and field in error["fields"] and error["message"]
    # Nothing half-written: no request number was taken, no request stored.
    assert not await app_redis.keys(keys.request_sequence("*"))
    assert not await app_redis.hlen(keys.request_units())


async def test_a_backslash_and_u0000_as_text_is_no_nul(app):
    """The NUL check looks at the decoded text: a description that writes out the six
    characters of an escape is taken as it is."""
    body = _with(description="the sign reads \\u0000 backwards")
    response = await app.post("/api/v1/requests", headers=auth("calltaker"), json=body)
    assert response.status_code == 201, response.text
    detail = await app.get(f"/api/v1/requests/{response.json()['id']}", headers=auth("center"))
    assert detail.json()["description"] == "the sign reads \\u0000 backwards"


async def test_http_auth_roles_ids_and_malformed_json(app, app_redis):
    http = app
    redis = app_redis
    assert (await http.post("/api/v1/requests", json=GOOD)).status_code == 401
    bad_token = {"Authorization": "Bearer not-a-token-at-all"}
    assert (await http.post("/api/v1/requests", json=GOOD, headers=bad_token)).status_code == 401
    refused = await http.post("/api/v1/requests", json=GOOD, headers=auth("wall"))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert (
        await http.post(
            "/api/v1/squads", json={"unit": "water", "name": "x"}, headers=auth("calltaker")
        )
    ).status_code == 403
    assert (await http.get("/api/v1/squads/S00001", headers=auth("calltaker"))).status_code == 403
    malformed = await http.post("/api/v1/requests", content=b"{not json", headers=auth("calltaker"))
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "malformed_json"
    for path in ("/api/v1/requests/R99999999", "/api/v1/squads/S99999"):
        missing = await http.get(path, headers=auth("center"))
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    unknown_unit = await http.post(
        "/api/v1/squads", json={"unit": "bakery", "name": "x"}, headers=auth("admin")
    )
    assert unknown_unit.status_code == 422 and "unit" in unknown_unit.json()["error"]["fields"]
    wrong_skill = await http.post(
        "/api/v1/squads",
        headers=auth("admin"),
        json={"unit": "water", "name": "x", "skills": ["gas_leak_smell"]},
    )
    assert wrong_skill.status_code == 422 and "skills" in wrong_skill.json()["error"]["fields"]
    assert not await redis.hlen(keys.squad_units())  # no squad was registered
    assert (await http.get("/api/v1/health")).status_code == 200  # no auth needed


async def test_police_matter_is_transferred_and_not_dispatched(hubs):
    hub = hubs.start()
    api = Api(hub)
    squad = await online_squad(api, hub, *XIGONG)
    created = await api.request(*XIGONG, category="police")
    assert (created["state"], created["route"], created["unit"]) == ("transferred", "police", None)
    detail = await api.get_request(created["id"])
    assert [e["type"] for e in detail["timeline"]] == ["received", "transferred"]
    assert squad.frames.qsize() == 1  # only its welcome: no offer
    await squad.close()
    await api.close()


async def _raw(hub, subprotocol=protocol.SUBPROTOCOL_MSGPACK):
    return connect(hub.ws, subprotocols=[subprotocol])


async def _next(ws) -> protocol.HubFrame:
    return protocol.decode_hub(await ws.recv())


async def test_frames_before_hello_and_bad_tokens_close_with_terminal_codes(hubs):
    hub = hubs.start()
    api = Api(hub)
    squad = await api.squad("water", "x")
    async with await _raw(hub) as ws:
        await ws.send(protocol.encode(protocol.Pos(lat=1, lon=1, ts=1)))
        error = await _next(ws)
        assert isinstance(error, protocol.Error) and error.code == "hello_first"
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == CloseCode.HELLO_REQUIRED
    async with await _raw(hub) as ws:
        await ws.send(protocol.encode(protocol.Hello(squad=squad["id"], token="wrong-token")))
        error = await _next(ws)
        assert isinstance(error, protocol.Error) and error.code == "auth_failed"
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == CloseCode.AUTH_FAILED
    async with connect(hub.ws, subprotocols=["chat"]) as ws:  # type: ignore[list-item]
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == CloseCode.UNSUPPORTED_SUBPROTOCOL
    seen = await api.get_squad(squad["id"])
    assert not seen["online"]
    await api.close()


async def test_bad_frames_get_errors_and_the_session_goes_on(hubs):
    hub = hubs.start(max_frame_bytes=512)
    api = Api(hub)
    holder = await online_squad(api, hub, *XIGONG, name="holder")
    created = await api.request(*XIGONG)
    offer = await holder.next_frame(protocol.Offer)
    other = await api.squad("water", "other")
    async with await _raw(hub) as ws:
        await ws.send(protocol.encode(protocol.Hello(squad=other["id"], token=other["token"])))
        assert isinstance(await _next(ws), protocol.Welcome)
        now = time.time()
        cases: list[tuple[bytes | str, str, str | None]] = [
            (b"\xc1\x00garbage", "malformed", None),
            (msgspec.msgpack.encode([1, 2, 3]), "malformed", None),
            (msgspec.msgpack.encode({"t": "teleport"}), "unknown_type", None),
            (
                msgspec.msgpack.encode({"t": "pos", "lat": 123.0, "lon": 1.0, "ts": 1.0}),
                "invalid",
                None,
            ),
            (msgspec.msgpack.encode({"t": "accept", "id": "c1"}), "invalid", "c1"),
            (b"\x81\xa1t\xa3pos" + b"\x00" * 600, "too_large", None),
            ('{"t":"pos","lat":1}', "invalid", None),  # JSON text on a msgpack socket
            (
                protocol.encode(protocol.Hello(squad=other["id"], token=other["token"])),
                "unexpected",
                None,
            ),
            (
                protocol.encode(protocol.Accept(assignment=offer.assignment, id="steal")),
                "unknown_assignment",
                "steal",
            ),
        ]
        for data, code, command_id in cases:
            await ws.send(data)
            error = await _next(ws)
            assert isinstance(error, protocol.Error), (data, error)
            assert (error.code, error.id) == (code, command_id), (data, error)
        lat_error = msgspec.msgpack.encode({"t": "pos", "lat": 123.0, "lon": 1.0, "ts": 1.0})
        await ws.send(lat_error)
        assert "$.lat" in (await _next(ws)).message  # type: ignore[union-attr]
    # The holder's own bad steps: wrong order and impossible times.
    async with await _raw(hub) as ws:
        pass
    from dispatch_field.client import CommandRejected

    for bad, code in [
        (protocol.Resolve(assignment=offer.assignment, id="r1"), "invalid_transition"),
        (protocol.Accept(assignment=offer.assignment, id="a1", at=now + 3600), "invalid_time"),
        # (dated a day back, it would count when the hub received it: test_dispatch_e2e.py)
    ]:
        with pytest.raises(CommandRejected) as refused:
            await holder.command(bad)
        assert refused.value.code == code
    # State intact: the request is still offered to the holder, who can accept it now.
    detail = await api.get_request(created["id"])
    assert (detail["state"], detail["squad"]) == ("offered", holder.squad)
    await holder.accept(offer.assignment)
    with pytest.raises(CommandRejected) as refused:
        await holder.defer(offer.assignment, until=time.time() - 10, reason="later")
    assert refused.value.code == "invalid_time"
    assert (await api.get_request(created["id"]))["state"] == "accepted"
    await holder.close()
    await api.close()


async def test_reference_client_stops_on_a_terminal_close(hubs):
    from dispatch_field.client import FieldClient, TerminalClose

    hub = hubs.start()
    api = Api(hub)
    squad = await api.squad("water", "x")
    client = FieldClient(hub.ws, squad["id"], "a-wrong-token", backoff_s=(0.01, 0.05))
    with pytest.raises(TerminalClose) as closed:
        await client.start()
    assert closed.value.code == CloseCode.AUTH_FAILED
    await asyncio.sleep(0.3)
    assert client.close_codes == [CloseCode.AUTH_FAILED]  # it did not try again
    await client.close()
    await api.close()


async def test_intake_retries_with_an_idempotency_key_never_make_twins(hubs, redis):
    hub = hubs.start()
    api = Api(hub)
    http, headers = api.http, auth("calltaker")
    first = await http.post(
        "/api/v1/requests", json=GOOD, headers=headers | {"Idempotency-Key": "call-1"}
    )
    again = await http.post(
        "/api/v1/requests", json=GOOD, headers=headers | {"Idempotency-Key": "call-1"}
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    twins = await asyncio.gather(
        *(
            http.post(
                "/api/v1/requests", json=GOOD, headers=headers | {"Idempotency-Key": "call-2"}
            )
            for _ in range(6)
        )
    )
    assert len({t.json()["id"] for t in twins}) == 1
    assert sorted(t.status_code for t in twins) == [200] * 5 + [201]
    assert await redis.hlen(keys.request_units()) == 2  # call-1 and call-2, nothing else
    # A crash after the key reserved an id but before the request was stored (the store's
    # own reservation, made here without the request): the retry creates it under that id.
    store = build_components(Settings(), redis, load_city()).requests
    fingerprint = msgspec.convert(GOOD, NewRequest).fingerprint()
    # (keys are scoped to the caller's actor label: DISPATCH_TOKENS' bootstrap account)
    reserved, stored = await store.reserve_id(
        "calltaker:bootstrap-calltaker", "call-3", fingerprint
    )
    assert not stored
    retried = await http.post(
        "/api/v1/requests", json=GOOD, headers=headers | {"Idempotency-Key": "call-3"}
    )
    assert (retried.status_code, retried.json()["id"]) == (201, reserved)
    assert (await api.get_request(reserved))["state"] in ("queued", "offered")
    bad = await http.post(
        "/api/v1/requests", json=GOOD, headers=headers | {"Idempotency-Key": "not a key!"}
    )
    assert bad.status_code == 422 and "Idempotency-Key" in bad.json()["error"]["fields"]
    assert await redis.hlen(keys.request_units()) == 3
    await api.close()


async def test_a_reused_idempotency_key_with_another_body_is_a_conflict(hubs, redis):
    hub = hubs.start()
    api = Api(hub)
    http, headers = api.http, auth("calltaker") | {"Idempotency-Key": "call-1"}
    first = await http.post("/api/v1/requests", json=GOOD, headers=headers)
    assert first.status_code == 201
    other = _with(description="gas smell in the stairwell", caller_phone="13900000000")
    reused = await http.post("/api/v1/requests", json=other, headers=headers)
    assert reused.status_code == 409, reused.text
    error = reused.json()["error"]
    assert error["code"] == "idempotency_key_reused" and "Idempotency-Key" in error["fields"]
    assert first.json()["id"] not in reused.text  # not answered with the first request
    assert await redis.hlen(keys.request_units()) == 1  # the conflict recorded nothing
    # The same body, spelled differently (key order, spacing, 34.670 for 34.67), is a retry.
    respelled = (
        f'{{"lon": {XIGONG[1]!r}, "lat": {XIGONG[0]:.4f}, "description": "pipe burst",'
        ' "category": "water_main_burst", "caller_phone": "13800000000"}'
    )
    assert f"{XIGONG[0]:.4f}" != repr(XIGONG[0])  # spelled differently indeed
    json_body = {"content-type": "application/json"}
    retried = await http.post("/api/v1/requests", content=respelled, headers=headers | json_body)
    assert (retried.status_code, retried.json()["id"]) == (200, first.json()["id"])
    # The second emergency goes through with its own key.
    second = await http.post(
        "/api/v1/requests", json=other, headers=auth("calltaker") | {"Idempotency-Key": "call-2"}
    )
    assert second.status_code == 201 and second.json()["id"] != first.json()["id"]
    assert await redis.hlen(keys.request_units()) == 2
    await api.close()


async def test_idempotency_keys_are_each_callers_own(hubs, redis):
    """Two callers who happen to pick the same key make two requests (admin may create
    requests too; with people's accounts, two call-takers are two callers)."""
    hub = hubs.start()
    api = Api(hub)
    key = {"Idempotency-Key": "shift-start-1"}
    made = [
        await api.http.post("/api/v1/requests", json=GOOD, headers=auth(role) | key)
        for role in ("calltaker", "admin")
    ]
    assert [m.status_code for m in made] == [201, 201]
    assert made[0].json()["id"] != made[1].json()["id"]
    assert await redis.hlen(keys.request_units()) == 2
    await api.close()


async def test_an_unforeseen_fault_is_a_500_in_the_errors_shape_without_a_traceback() -> None:
    """The hub's error handlers on a route that fails as no handler foresaw: the caller gets
    the error JSON every answer has, not Starlette's plain text, and no traceback."""

    async def broken(request: Request) -> Response:
        raise RuntimeError("secret detail of the fault")

    app = Starlette(routes=[Route("/broken", broken)], exception_handlers=error_handlers())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        answer = await client.get("/broken")
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal"
    assert "secret detail" not in answer.text and "Traceback" not in answer.text
