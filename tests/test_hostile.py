"""A hostile phone or client against real hub processes: positions Redis refuses, half-open
sockets, too many connections, huge bodies, floods of frames, deeply nested frames, promises
to infinity, unbounded queries. Each one costs the attacker, never other phones."""

from __future__ import annotations

import asyncio
import contextlib
import math
import select
import socket
import time
from pathlib import Path

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from dispatch_field import protocol
from dispatch_field.client import CommandRejected, FieldClient
from dispatch_field.codes import CloseCode
from server.store import keys
from server.store.positions import PositionWriter
from tests.conftest import TOKENS
from tests.helpers import XIGONG, Api, auth, desk_auth, eventually, online_squad

# ---- helpers ----------------------------------------------------------------------------------


async def _next(ws) -> protocol.HubFrame:
    return protocol.decode_hub(await asyncio.wait_for(ws.recv(), 10))


async def _closed_with(ws) -> int | None:
    """Read until the hub closes; the close code."""
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    return ws.close_code


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)


def _log_lines(hub) -> int:
    return len(hub.log().splitlines())


def _raw_socket(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    return sock


def _wait_closed(sockets: list[socket.socket], timeout_s: float) -> list[socket.socket]:
    """Wait until the peer closed each socket (recv gives b''); the ones still open."""
    open_ = list(sockets)
    deadline = time.monotonic() + timeout_s
    while open_ and time.monotonic() < deadline:
        readable, _, _ = select.select(open_, [], [], 0.2)
        for sock in readable:
            try:
                data = sock.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                open_.remove(sock)
    return open_


# ---- 1. positions -------------------------------------------------------------------------------


async def test_a_position_redis_refuses_costs_only_its_own_squad(hubs, redis):
    hub = hubs.start()
    api = Api(hub)
    # The protocol refuses a latitude Redis GEO cannot store, with the field named.
    holder = await online_squad(api, hub, *XIGONG, name="holder")
    await holder.send_raw(
        msgspec.msgpack.encode({"t": "pos", "lat": 89.0, "lon": XIGONG[1], "ts": time.time()})
    )
    error = await holder.next_frame(protocol.Error)
    assert error.code == "invalid" and "$.lat" in error.message
    await holder.close()
    # A fix that reaches the writer anyway (it is the last line: Redis's own limit) is refused
    # alone: the other squad of the unit, in the same batch, is written and dispatched.
    bad, good = await api.squad("water", "bad"), await api.squad("water", "good")
    phone = FieldClient(hub.ws, good["id"], good["token"], reconnect=False)
    await phone.start()
    await phone.duty(True)  # on duty, no position sent through the hub
    writer = PositionWriter(redis, 0.01)
    now = time.time()
    writer.add("water", bad["id"], 89.0, XIGONG[1], now)
    writer.add("water", good["id"], XIGONG[0], XIGONG[1], now)
    assert await writer.flush() == 1 and writer.refused == 1
    assert await redis.zscore(keys.fix_times("water"), good["id"]) == now
    assert await redis.zscore(keys.fix_times("water"), bad["id"]) is None  # not "fresh"
    assert await redis.geopos(keys.geo("water"), bad["id"]) == [None]
    created = await api.request(*XIGONG)
    offer = await phone.next_frame(protocol.Offer)
    assert offer.request.id == created["id"]
    await phone.close()
    await api.close()


async def test_intake_refuses_a_latitude_redis_cannot_store(hubs):
    hub = hubs.start()
    api = Api(hub)
    body = {
        "caller_phone": "13800000000",
        "category": "water_main_burst",
        "description": "x",
        "lat": 89.0,
        "lon": 112.4,
    }
    refused = await api.http.post("/api/v1/requests", headers=auth("calltaker"), json=body)
    assert refused.status_code == 422 and "lat" in refused.json()["error"]["fields"]
    assert "85.05112878" in refused.json()["error"]["message"]
    await api.close()


# ---- 2. connections ---------------------------------------------------------------------------


async def test_half_open_sockets_are_closed_by_the_header_deadline_and_phones_still_connect(hubs):
    hub = hubs.start(header_timeout_s=1)
    api = Api(hub)
    started = time.monotonic()
    half_open = []
    for _ in range(500):
        sock = _raw_socket(hub.port)
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: hub\r\nX-Slow: ")
        half_open.append(sock)
    # A kept-alive connection whose second request never finishes is cut off too.
    kept = _raw_socket(hub.port)
    kept.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: hub\r\n\r\n")
    assert kept.recv(65536).startswith(b"HTTP/1.1 200")
    kept.sendall(b"GET /api/v1/health HTTP/1.1\r\nHo")
    # Meanwhile a new phone connects and works.
    squad = await online_squad(api, hub, *XIGONG)
    created = await api.request(*XIGONG)
    assert (await squad.next_frame(protocol.Offer)).request.id == created["id"]
    still_open = await asyncio.to_thread(_wait_closed, [*half_open, kept], 10.0)
    assert not still_open, f"{len(still_open)} sockets still open"
    assert time.monotonic() - started < 10
    assert squad.connected  # the deadline is for headers, not for open WebSockets
    await squad.close()
    for sock in [*half_open, kept]:
        sock.close()
    await api.close()


def _health(port: int, source: str) -> bytes:
    sock = _raw_socket(port, source)
    try:
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
        return sock.recv(65536)
    finally:
        sock.close()


async def test_connections_are_capped_per_address_and_in_total(hubs):
    hub = hubs.start(max_connections=30, max_connections_per_address=20)
    held = [_raw_socket(hub.port, "127.0.0.2") for _ in range(20)]
    await asyncio.sleep(0.2)
    refused = _health(hub.port, "127.0.0.2")
    assert refused.startswith(b"HTTP/1.1 503") and b'"unavailable"' in refused
    assert _health(hub.port, "127.0.0.3").startswith(b"HTTP/1.1 200")  # another address
    held += [_raw_socket(hub.port, "127.0.0.3") for _ in range(10)]
    await asyncio.sleep(0.2)
    assert _health(hub.port, "127.0.0.4").startswith(b"HTTP/1.1 503")  # 30 in total
    held.pop().close()
    held.pop(0).close()
    await asyncio.sleep(0.2)
    assert _health(hub.port, "127.0.0.2").startswith(b"HTTP/1.1 200")  # freed again
    for sock in held:
        sock.close()
    assert "refused" in hub.log() and "connection(s)" in hub.log()  # said once, with counts


# ---- 3. bodies -------------------------------------------------------------------------------

_POST_HEAD = (
    "POST /api/v1/requests HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {token}\r\n"
    "Content-Type: application/json\r\n"
)


async def _response(reader: asyncio.StreamReader) -> bytes:
    """What the hub answers before it closes (it closes after a 413)."""
    data = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            data += chunk
    return data


async def _post_declared(port: int, size: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = _POST_HEAD.format(token=TOKENS["calltaker"]) + f"Content-Length: {size}\r\n\r\n"
    writer.write(head.encode())  # the body never comes: the answer must not wait for it
    response = await asyncio.wait_for(_response(reader), 10)
    writer.close()
    return response


def _post_chunked(port: int, size: int) -> bytes:
    """Stream ``size`` bytes chunked, reading whatever the hub answers meanwhile; the answer.
    A plain socket: the answer must be read before the reset that follows it (the hub closes
    with the rest of the body unread), which asyncio's streams would report first."""
    sock = _raw_socket(port)
    head = _POST_HEAD.format(token=TOKENS["calltaker"]) + "Transfer-Encoding: chunked\r\n\r\n"
    sock.sendall(head.encode())
    sock.setblocking(False)
    chunk = b"%x\r\n%s\r\n" % (65536, b"[" * 65536)
    response, pending, sent, writing = b"", b"", 0, True
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock] if writing else [], [], 0.5)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionError:
                    break
                if not data:
                    break
                response += data
            elif writable:
                if not pending:
                    pending = chunk if sent < size else b"0\r\n\r\n"
                    sent += len(chunk)
                try:
                    pending = pending[sock.send(pending) :]
                except (BlockingIOError, ConnectionError):
                    writing = False
                writing = writing and (sent <= size or bool(pending))
    finally:
        sock.close()
    return response


async def test_a_10_mb_body_is_a_413_read_in_bounded_memory(hubs):
    hub = hubs.start()
    pid, size = hub.process.pid, 10 * 1024 * 1024
    for name in ("declared", "chunked"):
        _reset_peak_rss(pid)
        before = _peak_rss_kb(pid)
        if name == "declared":
            response = await _post_declared(hub.port, size)
        else:
            response = await asyncio.to_thread(_post_chunked, hub.port, size)
        assert response.startswith(b"HTTP/1.1 413"), response[:200]
        assert b'"too_large"' in response
        grown_mb = (_peak_rss_kb(pid) - before) / 1024
        assert grown_mb < 4, f"{name}: peak RSS grew {grown_mb:.1f} MB"
    # Bodies within the cap are served as before.
    api = Api(hub)
    await api.request(*XIGONG)
    await api.close()


# ---- 4./5. frames: rates, bad frames before and after hello, nesting -----------------------


@pytest.mark.parametrize(
    "frame",
    [
        protocol.Ack(seq=0),
        # positions are taken in the socket's read callback (server.net's inline handler)
        protocol.Pos(lat=XIGONG[0], lon=XIGONG[1], ts=1.0),
    ],
    ids=["acks", "positions"],
)
async def test_a_phone_past_its_frame_rate_gets_an_error_then_a_close(hubs, frame):
    hub = hubs.start(frame_rate=5, frame_burst=10)
    api = Api(hub)
    squad = await api.squad("water", "chatty")
    async with connect(hub.ws, subprotocols=[protocol.SUBPROTOCOL_MSGPACK]) as ws:
        await ws.send(protocol.encode(protocol.Hello(squad=squad["id"], token=squad["token"])))
        assert isinstance(await _next(ws), protocol.Welcome)
        for _ in range(30):
            await ws.send(protocol.encode(frame))
        error = await _next(ws)
        assert isinstance(error, protocol.Error) and error.code == "rate_limited"
        assert await _closed_with(ws) == CloseCode.RATE_LIMITED
    await api.close()


async def test_a_phone_past_its_command_rate_gets_an_error_then_a_close(hubs):
    hub = hubs.start(command_rate=1, command_burst=3)
    api = Api(hub)
    squad = await api.squad("water", "clicky")
    async with connect(hub.ws, subprotocols=[protocol.SUBPROTOCOL_MSGPACK]) as ws:
        await ws.send(protocol.encode(protocol.Hello(squad=squad["id"], token=squad["token"])))
        assert isinstance(await _next(ws), protocol.Welcome)
        for n in range(10):
            await ws.send(protocol.encode(protocol.Accept(assignment="A-none", id=f"c{n}")))
        codes = []
        with pytest.raises(ConnectionClosed):
            while True:
                codes.append((await _next(ws)).code)  # type: ignore[union-attr]
        assert codes == ["unknown_assignment"] * 3 + ["rate_limited"]
        assert ws.close_code == CloseCode.RATE_LIMITED
    await api.close()


async def test_failed_hellos_from_one_address_are_throttled(hubs):
    hub = hubs.start(hello_failures_per_min=3)
    api = Api(hub)
    squad = await api.squad("water", "target")
    wrong = protocol.encode(protocol.Hello(squad=squad["id"], token="guess-123456"))
    right = protocol.encode(protocol.Hello(squad=squad["id"], token=squad["token"]))
    for _ in range(3):
        async with connect(hub.ws, subprotocols=[protocol.SUBPROTOCOL_MSGPACK]) as ws:
            await ws.send(wrong)
            assert (await _next(ws)).code == "auth_failed"  # type: ignore[union-attr]
            assert await _closed_with(ws) == CloseCode.AUTH_FAILED
    for hello in (wrong, right):  # the right token too: the address is not listened to now
        async with connect(hub.ws, subprotocols=[protocol.SUBPROTOCOL_MSGPACK]) as ws:
            await ws.send(hello)
            assert (await _next(ws)).code == "rate_limited"  # type: ignore[union-attr]
            assert await _closed_with(ws) == CloseCode.HELLO_THROTTLED
    assert CloseCode.HELLO_THROTTLED.reconnect  # phones behind the address retry later
    other = ("127.0.0.2", 0)
    async with connect(hub.ws, subprotocols=[protocol.SUBPROTOCOL_MSGPACK], local_addr=other) as ws:
        await ws.send(right)
        assert isinstance(await _next(ws), protocol.Welcome)
    await api.close()


def _nested_frames() -> list[tuple[str, bytes | str]]:
    """Deeply nested frames of every kind, with the subprotocol each goes on."""
    json_, msgpack = protocol.SUBPROTOCOL_JSON, protocol.SUBPROTOCOL_MSGPACK
    depth = 2000  # fits in DISPATCH_MAX_FRAME_BYTES: the decoder sees it
    return [
        (json_, "[" * depth + "]" * depth),
        (json_, '{"t":"hello","squad":' + "[" * depth + "]" * depth + "}"),
        (msgpack, b"\x91" * 4000 + b"\xc0"),
        (msgpack, b"\x82\xa1t\xa5hello\xa5squad" + b"\x91" * 4000 + b"\xc0"),
        (msgpack, b"\x81\xa1t" + b"\x91" * 4000 + b"\xc0"),
        (json_, "[" * 100_000 + "]" * 100_000),  # above every limit
        (msgpack, b"\x91" * 100_000 + b"\xc0"),
    ]


async def test_nested_frames_before_hello_close_as_malformed_with_bounded_log(hubs):
    hub = hubs.start()
    lines_before = _log_lines(hub)
    frames = _nested_frames()
    closes: dict[int, int] = {}
    for n in range(200):
        subprotocol, data = frames[n % len(frames)]
        async with connect(hub.ws, subprotocols=[subprotocol], max_size=None) as ws:  # type: ignore[list-item]
            await ws.send(data)
            codes = []
            with pytest.raises(ConnectionClosed):
                while True:
                    raw = await asyncio.wait_for(ws.recv(), 10)
                    codes.append(protocol.decode_hub(raw).code)  # type: ignore[union-attr]
            assert ws.close_code is not None
            closes[ws.close_code] = closes.get(ws.close_code, 0) + 1
            assert set(codes) <= {"malformed", "too_large", "invalid"}, codes
    # Refused as not a hello (or by the transport's size limit), never as the hub's failure.
    assert set(closes) <= {CloseCode.HELLO_REQUIRED, 1009}, closes
    assert closes.get(CloseCode.HELLO_REQUIRED, 0) >= 100
    await asyncio.sleep(0.3)
    grown = _log_lines(hub) - lines_before
    assert grown <= 5, hub.log()[-3000:]


async def test_nested_frames_after_hello_are_malformed_and_the_session_lives(hubs):
    hub = hubs.start(frame_burst=1000)
    api = Api(hub)
    squad = await api.squad("water", "nested")
    lines_before = _log_lines(hub)
    frames = [(s, d) for s, d in _nested_frames() if len(d) <= 4096]
    for subprotocol in (protocol.SUBPROTOCOL_MSGPACK, protocol.SUBPROTOCOL_JSON):
        mine = [d for s, d in frames if s == subprotocol]
        json_mode = subprotocol == protocol.SUBPROTOCOL_JSON
        client = FieldClient(hub.ws, squad["id"], squad["token"], json=json_mode, reconnect=False)
        await client.start()
        for n in range(100):
            await client.send_raw(mine[n % len(mine)])
        for _ in range(100):
            error = await client.next_frame(protocol.Error)
            assert error.code in ("malformed", "invalid"), error
        await client.duty(True)
        with pytest.raises(CommandRejected) as refused:  # commands still answered
            await client.accept("A-none")
        assert refused.value.code == "unknown_assignment"
        assert client.connected and client.close_codes == []
        await client.close()
    grown = _log_lines(hub) - lines_before
    assert grown <= 5, hub.log()[-3000:]
    await api.close()


# ---- 6. promises ------------------------------------------------------------------------------


async def test_defer_to_infinity_is_refused_and_the_session_lives(hubs):
    hub = hubs.start()
    api = Api(hub)
    holder = await online_squad(api, hub, *XIGONG)
    created = await api.request(*XIGONG)
    offer = await holder.next_frame(protocol.Offer)
    await holder.accept(offer.assignment)
    now = time.time()
    bad_untils = {
        "inf": math.inf,
        "1e300": 1e300,
        "nan": math.nan,
        "year 9999": 253402300799.0,
        "past the horizon": now + 31 * 86400,
    }
    for name, until in bad_untils.items():
        defer = protocol.Defer(
            assignment=offer.assignment, id=f"d-{name}", until=until, reason="later"
        )
        with pytest.raises(CommandRejected) as refused:
            await holder.command(defer, timeout_s=5)
        assert refused.value.code in ("invalid", "invalid_time"), (name, refused.value)
        assert holder.connected, name
    detail = await api.get_request(created["id"])
    assert detail["state"] == "accepted" and not detail.get("promised_by")
    assert [e["type"] for e in detail["timeline"]][-1] == "accepted"
    await holder.defer(offer.assignment, until=now + 86400, reason="needs a part")
    assert (await api.get_request(created["id"]))["state"] == "deferred"
    assert "field session" not in hub.log()  # nothing failed inside the hub
    await holder.close()
    await api.close()


# ---- 7. queries -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"offset": str(2**63)}, "offset"),
        ({"offset": "1000001"}, "offset"),
        ({"since": "inf"}, "since"),
        ({"until": "nan"}, "until"),
        ({"until": "1e300"}, "until"),
        ({"limit": str(2**64)}, "limit"),
    ],
)
async def test_unbounded_ledger_queries_are_422_naming_the_field(hubs, query, field):
    hub = hubs.start()
    api = Api(hub)
    response = await api.http.get("/api/v1/ledger/requests", params=query, headers=auth("center"))
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]["fields"]
    await api.close()


async def test_emfile_is_logged_once_per_burst_with_the_descriptor_count(caplog):
    import errno
    import logging

    from server.net import accept_error_handler

    passed_on: list[dict] = []
    handler = accept_error_handler(lambda loop, context: passed_on.append(context))
    loop = asyncio.get_running_loop()
    failure = OSError(errno.EMFILE, "Too many open files")
    with caplog.at_level(logging.ERROR, logger="server.net"):
        for _ in range(50):
            handler(
                loop, {"message": "socket.accept() out of system resource", "exception": failure}
            )
        handler(loop, {"message": "something else", "exception": ValueError("x")})
    lines = [r.getMessage() for r in caplog.records if r.name == "server.net"]
    assert len(lines) == 1 and "descriptors open" in lines[0] and "Too many open files" in lines[0]
    assert [c["message"] for c in passed_on] == ["something else"]


async def test_everything_still_works_for_a_normal_phone(hubs):
    """The limits do not bite ordinary use: a phone sending a position a second for a while,
    then working a request through."""
    hub = hubs.start()
    api = Api(hub)
    squad = await online_squad(api, hub, *XIGONG)
    for _ in range(5):
        await squad.pos(*XIGONG)
    created = await api.request(*XIGONG)
    offer = await squad.next_frame(protocol.Offer)
    await squad.accept(offer.assignment)
    await squad.enroute(offer.assignment)
    await squad.pos(*XIGONG)  # at the scene: arrival is recorded

    async def arrived() -> bool:
        return (await api.get_request(created["id"]))["state"] == "on_scene"

    await eventually(arrived)
    await squad.resolve(offer.assignment, "done")
    await squad.close()
    await api.close()


async def _roster_state(
    api: Api, desk: dict[str, str], squad_id: str, online: bool | None = None
) -> tuple[bool, float | None] | None:
    """(online, last_seen) of a squad in its desk's roster; None while ``online`` is given
    and the roster says otherwise."""
    rows = (await api.http.get("/api/v1/squads", headers=desk)).json()
    [row] = [row for row in rows if row["id"] == squad_id]
    if online is not None and row["online"] is not online:
        return None
    return row["online"], row["last_seen"]


async def test_a_lost_phones_token_is_replaced_and_stops_working_at_once(hubs):
    """A stolen phone's token could take over its squad for good (a newer connection closes
    the older one with 4102, terminal for the real phone). The unit's desk replaces it: the
    connection it holds, on whichever process, is closed with 4100, the old token is refused,
    the new one works; another unit's desk may not, nor may a call-taker."""
    a, b = hubs.start(), hubs.start()
    api = Api(a)
    squad = await api.squad("water", "lost phone")
    thief = await connect(b.ws, subprotocols=[protocol.SUBPROTOCOL_MSGPACK])  # on the other
    await thief.send(protocol.encode(protocol.Hello(squad=squad["id"], token=squad["token"])))
    assert isinstance(await _next(thief), protocol.Welcome)
    path = f"/api/v1/squads/{squad['id']}/token"
    water, gas = await desk_auth(api.http, "water"), await desk_auth(api.http, "gas")
    assert (await api.http.post(path, headers=gas)).status_code == 403
    assert (await api.http.post(path, headers=auth("calltaker"))).status_code == 403
    assert await _roster_state(api, water, squad["id"]) == (True, None)
    unknown = await api.http.post("/api/v1/squads/S0000000000/token", headers=water)
    assert unknown.status_code == 404
    replaced = await api.http.post(path, headers=water)
    assert replaced.status_code == 201, replaced.text
    body = replaced.json()
    assert body["id"] == squad["id"] and body["closed"] is True
    assert body["token"] != squad["token"]
    assert await _closed_with(thief) == CloseCode.AUTH_FAILED
    online, last_seen = await eventually(lambda: _roster_state(api, water, squad["id"], False))
    assert not online and last_seen  # the desk's roster shows the phone gone, and since when
    old = protocol.encode(protocol.Hello(squad=squad["id"], token=squad["token"]))
    new = protocol.encode(protocol.Hello(squad=squad["id"], token=body["token"]))
    for hub in (a, b):
        async with connect(hub.ws, subprotocols=[protocol.SUBPROTOCOL_MSGPACK]) as ws:
            await ws.send(old)
            assert (await _next(ws)).code == "auth_failed"  # type: ignore[union-attr]
            assert await _closed_with(ws) == CloseCode.AUTH_FAILED
    async with connect(b.ws, subprotocols=[protocol.SUBPROTOCOL_MSGPACK]) as ws:
        await ws.send(new)
        assert isinstance(await _next(ws), protocol.Welcome)
    described = (await api.http.get(f"/api/v1/squads/{squad['id']}", headers=water)).json()
    assert body["token"] not in str(described)
    await api.close()
