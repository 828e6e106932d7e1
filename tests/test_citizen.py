"""The citizen told: templates, delivery rules (pure); the outbox against a real Redis; hub
processes sending through the log file and through a webhook to a real local HTTP gateway
that fails, times out, refuses, and a hub killed with messages pending."""

from __future__ import annotations

import asyncio
import json
import os
import random
import stat
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from redis.asyncio import Redis

from dispatch_field import protocol
from server.citizen.compose import Message, intake_messages, step_message
from server.citizen.delivery import (
    Attempt,
    Outcome,
    RetryPolicy,
    backoff_s,
    http_outcome,
    next_step,
    retry_after_s,
)
from server.citizen.messages import (
    DEFAULT_PATH,
    TemplateError,
    load_templates,
    parse_templates,
    render,
)
from server.citizen.outbox import CitizenOutbox
from server.citizen.record import messages_of
from server.citizen.senders import MemorySender
from server.city import load_city
from server.store import keys
from server.store.embedded import free_port
from server.store.scripts import Scripts
from tests.conftest import skip_on_cluster
from tests.helpers import XIGONG, Api, auth, counted_client, desk_token, eventually, online_squad

TEMPLATES = load_templates()
CITY = load_city()


# ---- templates (pure) -----------------------------------------------------------------------


def _shipped() -> dict[str, Any]:
    import tomllib

    return tomllib.loads(DEFAULT_PATH.read_text(encoding="utf-8"))


def test_the_shipped_templates_load_in_both_languages() -> None:
    assert render(TEMPLATES, "received", "zh", "20261130-000001") == (
        "【城市联动】您的诉求已受理，编号 20261130-000001。"
    )
    assert "20261130-000001" in render(TEMPLATES, "received", "en", "20261130-000001")
    assert render(TEMPLATES, "received", "fr", "X") == render(TEMPLATES, "received", "zh", "X")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["resolved"].update(zh="{id} {numbr}"),
            "[resolved] zh: unknown placeholder {numbr}",
        ),
        (
            lambda d: d["accepted"].update(en="{id} {until}"),
            "[accepted] en: unknown placeholder {until}",
        ),
        (lambda d: d.pop("arrived"), "[arrived] is missing"),
        (lambda d: d["arrived"].pop("en"), "[arrived]: en is missing"),
        (lambda d: d["arrived"].update(fr="x"), "[arrived]: unknown language 'fr'"),
        (lambda d: d.update(arived={"zh": "x", "en": "y"}), "unknown message kind [arived]"),
        (lambda d: d["resolved"].update(zh="{id!r}"), "{id} must be plain"),
        (lambda d: d["resolved"].update(zh="{id:>9}"), "{id} must be plain"),
        (lambda d: d["resolved"].update(zh="{id.x}"), "unknown placeholder {id.x}"),
        (lambda d: d["resolved"].update(zh="编号 {id"), "write a literal brace twice"),
        (lambda d: d["services"].pop("fire"), "[services.fire] is missing"),
        (
            lambda d: d["services"]["fire"].update(zh="{id}"),
            "[services.fire] zh: unknown placeholder {id}",
        ),
    ],
)
def test_a_bad_templates_file_is_refused_naming_the_place(
    change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    data = _shipped()
    change(data)
    with pytest.raises(TemplateError) as refused:
        parse_templates(data, "messages.toml")
    assert expected in str(refused.value)


def test_an_unreadable_templates_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "messages.toml"
    bad.write_text("[received\nzh = 1", encoding="utf-8")
    with pytest.raises(TemplateError, match="cannot read"):
        load_templates(bad)
    with pytest.raises(TemplateError, match="cannot read"):
        load_templates(tmp_path / "missing.toml")


def test_intake_names_the_number_the_unit_or_the_service() -> None:
    fields = {"id": "20261130-000007", "caller_phone": "13800000000", "route": "linkage"}
    (linkage,) = intake_messages(TEMPLATES, CITY, "water", fields, 1.0)
    assert "20261130-000007" in linkage.text and "洛阳市" in linkage.text
    assert linkage.key == "20261130-000007:received_unit:1" and linkage.lang == "zh"
    police = {
        "id": "20261130-000008",
        "caller_phone": "13800000000",
        "route": "police",
        "lang": "en",
    }
    received, transferred = intake_messages(TEMPLATES, CITY, keys.NO_UNIT, police, 1.0)
    assert "20261130-000008" in received.text and received.lang == "en"
    assert "110 (police)" in transferred.text
    assert intake_messages(TEMPLATES, CITY, "water", {**fields, "caller_phone": ""}, 1.0) == []


def test_a_promise_is_shown_in_the_city_time_zone() -> None:
    fields = {"id": "20261130-000009", "caller_phone": "13800000000"}
    until = 1767225600.0  # 2026-01-01 00:00 UTC = 08:00 in Luoyang
    message = step_message(
        TEMPLATES, CITY, "water", fields, "deferred", "abc", 1.0, note="parts", until=until
    )
    assert message is not None and "2026-01-01 08:00" in message.text and "parts" in message.text
    assert CITY.zone == ZoneInfo("Asia/Shanghai")
    assert step_message(TEMPLATES, CITY, "water", fields, "disputed", "abc", 1.0) is None
    cancelled = step_message(
        TEMPLATES, CITY, "water", fields, "cancelled", "c", 1.0, reason="duplicate"
    )
    assert cancelled is not None and "重复" in cancelled.text


# ---- delivery rules (pure) ----------------------------------------------------------------


POLICY = RetryPolicy(base_s=1.0, cap_s=300.0, max_attempts=5, max_age_s=3600.0)


def test_what_an_answer_means() -> None:
    assert http_outcome(200) is http_outcome(204) is Outcome.DELIVERED
    for permanent in (400, 401, 403, 404, 410, 422):
        assert http_outcome(permanent) is Outcome.FAILED
    for transient in (408, 429, 500, 502, 503, 504, 301):
        assert http_outcome(transient) is Outcome.RETRY
    assert retry_after_s("7", 0.0) == 7.0
    assert retry_after_s("999999", 0.0) == 3600.0
    assert retry_after_s("Thu, 01 Jan 2026 00:00:10 GMT", 1767225600.0) == 10.0
    assert retry_after_s("soon", 0.0) is None and retry_after_s(None, 0.0) is None


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(1)
    waits = [backoff_s(n, POLICY, rng) for n in range(1, 12)]
    for n, wait in enumerate(waits, start=1):
        ceiling = min(300.0, 2 ** (n - 1))
        assert ceiling / 2 <= wait <= ceiling
    assert len({round(w, 6) for w in waits}) == len(waits)  # jittered


def test_a_message_is_given_up_after_its_attempts_or_its_age() -> None:
    retry = Attempt(Outcome.RETRY, 503, "HTTP 503")
    outcome, at = next_step(retry, 1, 0.0, 10.0, POLICY)
    assert outcome is Outcome.RETRY and 10.5 <= at <= 11.0
    assert next_step(retry, 5, 0.0, 10.0, POLICY)[0] is Outcome.FAILED
    assert next_step(retry, 2, 0.0, 3599.5, POLICY)[0] is Outcome.FAILED
    asked = Attempt(Outcome.RETRY, 429, "HTTP 429", retry_after_s=120.0)
    assert next_step(asked, 1, 0.0, 10.0, POLICY) == (Outcome.RETRY, 130.0)
    assert next_step(Attempt(Outcome.FAILED, 400), 1, 0.0, 1.0, POLICY)[0] is Outcome.FAILED


def test_the_record_folds_a_message_and_its_attempts() -> None:
    def row(kind: str, **data: Any) -> dict[str, Any]:
        return {"type": f"citizen_message_{kind}", "data": {"key": "r:accepted:1", **data}}

    rows = [
        {"type": "accepted", "data": {}},
        row("queued", message="m1", event="accepted", text="hi", lang="zh", at=1.0),
        row("attempt", attempt=1, outcome="retry", status=500, at=2.0),
        row("attempt", attempt=1, outcome="retry", status=500, at=2.0),  # read twice
        row("attempt", attempt=2, outcome="delivered", status=200, at=3.0),
        row("delivered", attempts=2, at=3.0),
    ]
    (record,) = messages_of(rows)
    assert record["state"] == "delivered" and record["text"] == "hi"
    assert [a["attempt"] for a in record["attempts"]] == [1, 2]


# ---- the outbox against a real Redis -------------------------------------------------------


class ScriptedSender:
    """Answers each send with the next outcome of the message's script (then delivered)."""

    def __init__(self, script: list[Attempt] | None = None) -> None:
        self.script = script or []
        self.sent: list[Message] = []
        self._tries: dict[str, int] = defaultdict(int)

    async def send(self, message: Message) -> Attempt:
        self.sent.append(message)
        n = self._tries[message.key]
        self._tries[message.key] += 1
        return self.script[n] if n < len(self.script) else Attempt(Outcome.DELIVERED, 200)

    async def close(self) -> None:
        return None


def _outbox(redis: Redis, **policy: Any) -> CitizenOutbox:
    rules = RetryPolicy(
        **{"base_s": 0.001, "cap_s": 0.002, "max_attempts": 5, "max_age_s": 3600.0, **policy}
    )
    return CitizenOutbox(
        redis, Scripts.register(redis), rules, lease_s=0.2, keep_s=60, events_maxlen=1000
    )


def _message(request: str, kind: str, n: int = 1) -> Message:
    key = f"{request}:{kind}:{n}"
    return Message(
        id=key,
        key=key,
        request=request,
        unit="water",
        event=kind,
        lang="zh",
        phone="13800000000",
        text=f"{kind} {request}",
        queued_at=time.time(),
    )


async def _events(redis: Redis, unit: str = "water") -> list[dict[str, Any]]:
    return [json.loads(fields[b"e"]) for _id, fields in await redis.xrange(keys.events(unit))]


async def _drain(outbox: CitizenOutbox, sender: Any, passes: int = 50) -> None:
    for _ in range(passes):
        await outbox.deliver_due(sender, ["water"])
        if not await outbox._redis.zcard(keys.citizen_due("water")):  # noqa: SLF001
            return
        await asyncio.sleep(0.01)


async def test_a_message_is_queued_once_per_key(redis: Redis) -> None:
    outbox = _outbox(redis)
    first = _message("R1", "accepted")
    assert await outbox.enqueue(first)
    assert not await outbox.enqueue(first)  # the same step carried out again
    sender = MemorySender()
    await _drain(outbox, sender)
    assert [m.key for m in sender.sent] == ["R1:accepted:1"]
    assert not await outbox.enqueue(first)  # remembered after delivery too
    types = [e["type"] for e in await _events(redis)]
    assert types == [
        "citizen_message_queued",
        "citizen_message_attempt",
        "citizen_message_delivered",
    ]
    assert 0 < await redis.ttl(keys.citizen_messages("water", "R1")) <= 60


async def test_a_delivery_pass_claims_takes_and_records_in_one_round_trip_each(
    redis: Redis, redis_url: str
) -> None:
    """Every unit's due requests are claimed in one round trip and their messages taken in
    another; the outcomes of sends that return together are recorded in a third."""
    skip_on_cluster(redis_url, "counts the round trips of one connection to one server")
    async with counted_client(redis) as (client, trips):
        await Scripts.register(client).load(client)
        outbox = _outbox(client)
        for request in ("R1", "R2", "R3"):
            await outbox.enqueue(_message(request, "received"))
        await outbox.enqueue(msgspec.structs.replace(_message("R4", "received"), unit="power"))
        sender = MemorySender()
        before = trips.count
        assert await outbox.deliver_due(sender, ["water", "power", "gas"]) == 4
        assert trips.count - before == 3
        assert sorted(m.request for m in sender.sent) == ["R1", "R2", "R3", "R4"]
        await _drain(outbox, sender)
        assert len(sender.sent) == 4  # nothing sent twice


async def test_one_requests_messages_keep_their_order_through_retries(redis: Redis) -> None:
    outbox = _outbox(redis)
    retry = Attempt(Outcome.RETRY, 500, "HTTP 500")
    sender = ScriptedSender([retry, retry])
    for kind in ("received", "accepted", "en_route", "arrived", "resolved"):
        await outbox.enqueue(_message("R1", kind))
    await outbox.enqueue(_message("R2", "received"))
    await _drain(outbox, sender)
    delivered = [m.key for m in sender.sent]
    first_attempts = list(dict.fromkeys(k for k in delivered if k.startswith("R1:")))
    assert first_attempts == [
        f"R1:{k}:1" for k in ("received", "accepted", "en_route", "arrived", "resolved")
    ]
    # Each message was tried 3 times (2 failures), and message n+1 only after n's success.
    r1 = [k for k in delivered if k.startswith("R1:")]
    assert r1 == [k for k in first_attempts for _ in range(3)]
    events = await _events(redis)
    assert sum(e["type"] == "citizen_message_delivered" for e in events) == 6
    assert sum(e["type"] == "citizen_message_attempt" for e in events) == 18


async def test_a_permanent_failure_is_recorded_and_the_next_message_goes(redis: Redis) -> None:
    outbox = _outbox(redis)
    sender = ScriptedSender([Attempt(Outcome.FAILED, 400, "HTTP 400")])
    await outbox.enqueue(_message("R1", "received"))
    await outbox.enqueue(_message("R1", "accepted"))
    await _drain(outbox, sender)
    events = await _events(redis)
    failed = [e for e in events if e["type"] == "citizen_message_failed"]
    assert len(failed) == 2 and failed[0]["status"] == 400 and failed[0]["attempts"] == 1
    assert len(sender.sent) == 2


async def test_a_message_gives_up_after_max_attempts(redis: Redis) -> None:
    outbox = _outbox(redis, max_attempts=3)
    sender = ScriptedSender([Attempt(Outcome.RETRY, 503, "HTTP 503")] * 10)
    await outbox.enqueue(_message("R1", "received"))
    await _drain(outbox, sender)
    assert len(sender.sent) == 3
    (failed,) = [e for e in await _events(redis) if e["type"] == "citizen_message_failed"]
    assert failed["attempts"] == 3 and failed["error"] == "HTTP 503"


async def test_a_late_answer_after_the_lease_ran_out_does_not_count_twice(redis: Redis) -> None:
    """Process A takes a message and stalls past its lease; B takes it over and delivers.
    A's late "retry" must not reschedule it, A's late "delivered" must not deliver it
    again."""
    outbox = _outbox(redis)
    await outbox.enqueue(_message("R1", "received"))
    await outbox.enqueue(_message("R1", "accepted"))

    class Stalling:
        def __init__(self) -> None:
            self.started, self.release = asyncio.Event(), asyncio.Event()

        async def send(self, message: Message) -> Attempt:
            self.started.set()
            await self.release.wait()
            return Attempt(Outcome.RETRY, 503, "HTTP 503")

        async def close(self) -> None:
            return None

    stalling = Stalling()
    stalled = asyncio.create_task(outbox.deliver_due(stalling, ["water"]))
    await stalling.started.wait()
    await asyncio.sleep(0.25)  # the lease (0.2 s) runs out
    fast = MemorySender()
    await outbox.deliver_due(fast, ["water"])  # B: delivers message 1
    stalling.release.set()
    await stalled
    await _drain(outbox, fast)
    assert [m.key for m in fast.sent] == ["R1:received:1", "R1:accepted:1"]
    delivered = [e for e in await _events(redis) if e["type"] == "citizen_message_delivered"]
    assert len(delivered) == 2


# ---- hub processes --------------------------------------------------------------------------


@dataclass
class Gateway:
    """A real HTTP SMS gateway on a free port. ``answer(key, nth, body)`` -> (status, delay s,
    headers); it dedupes by Idempotency-Key as a real gateway should."""

    answer: Callable[[str, int, dict[str, Any]], tuple[int, float, dict[str, str]]]
    received: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    delivered: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    order: list[str] = field(default_factory=list)  # keys in the order first delivered
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sms"


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    gate = Gateway(answer=lambda key, nth, body: (200, 0.0, {}))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the standard library's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            key = self.headers.get("Idempotency-Key", "")
            with gate.lock:
                gate.received.append((key, body, dict(self.headers)))
                nth = sum(1 for k, _, _ in gate.received if k == key)
            status, delay, headers = gate.answer(key, nth, body)
            time.sleep(delay)
            if 200 <= status < 300:
                with gate.lock:
                    if not gate.delivered[key]:
                        gate.order.append(key)
                    gate.delivered[key] += 1
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the hub gave up waiting (its timeout)

        def log_message(self, *args: Any) -> None:
            return None

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    gate.port = port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield gate
    server.shutdown()
    server.server_close()


def _webhook(gateway: Gateway, **extra: Any) -> dict[str, Any]:
    return {
        "citizen_sender": "webhook",
        "citizen_webhook_url": gateway.url,
        "citizen_webhook_token": "gateway-secret-987",
        "citizen_webhook_timeout_s": 1,
        "citizen_retry_base_s": 0.2,
        "citizen_poll_s": 0.1,
        **extra,
    }


async def _ledger_messages(api: Api, request_id: str) -> list[dict[str, Any]]:
    response = await api.http.get(f"/api/v1/requests/{request_id}/messages", headers=auth("center"))
    assert response.status_code == 200, response.text
    return response.json()["messages"]  # type: ignore[no-any-return]


async def test_webhook_failures_retried_every_message_once_in_order(hubs, gateway) -> None:
    def answer(key: str, nth: int, body: dict[str, Any]) -> tuple[int, float, dict[str, str]]:
        if nth == 1:
            return 500, 0.0, {}
        if nth == 2:
            return 504, 2.0, {}  # answers after the hub's 1 s timeout: a timeout for the hub
        return 200, 0.0, {}

    gateway.answer = answer
    hub = hubs.start(**_webhook(gateway))
    api = Api(hub)
    client = await online_squad(api, hub, *XIGONG)
    created = await api.request(*XIGONG)
    police = await api.request(*XIGONG, category="police", lang="en")
    offer = await client.next_frame(protocol.Offer)
    for step in (client.accept, client.enroute, client.arrive):
        await step(offer.assignment)
    await client.resolve(offer.assignment, note="valve replaced")
    rid, pid = created["id"], police["id"]
    expected = {
        rid: ["received_unit", "accepted", "en_route", "arrived", "resolved"],
        pid: ["received", "transferred"],
    }

    async def all_delivered() -> bool:
        wanted = {f"{r}:{kind}" for r, kinds in expected.items() for kind in kinds}
        return {k.rsplit(":", 1)[0] for k in gateway.order} >= wanted

    await eventually(all_delivered, timeout_s=60)
    for request_id, kinds in expected.items():
        mine = [k for k in gateway.order if k.startswith(request_id)]
        assert [k.split(":")[1] for k in mine] == kinds  # in order
    assert all(count == 1 for count in gateway.delivered.values())  # exactly once each
    per_key = defaultdict(list)
    for key, body, headers in gateway.received:
        per_key[key].append(body)
        assert headers["Authorization"] == "Bearer gateway-secret-987"
        assert body["idempotency_key"] == key and body["phone"] == "13800000000"
    assert all(len(bodies) == 3 for bodies in per_key.values()), per_key
    resolved = next(k for k in per_key if k.startswith(f"{rid}:resolved:"))
    assert per_key[resolved][0]["text"].endswith("valve replaced")
    english = per_key[f"{pid}:transferred:1"][0]
    assert english["lang"] == "en" and "110 (police)" in english["text"]

    async def recorded() -> list[dict[str, Any]]:
        messages = await _ledger_messages(api, rid)
        done = [m for m in messages if m["state"] == "delivered"]
        return messages if len(done) == 5 else []

    messages = await eventually(recorded, timeout_s=15)
    assert [m["event"] for m in messages] == expected[rid]
    for message in messages:
        outcomes = [a["outcome"] for a in message["attempts"]]
        assert outcomes == ["retry", "retry", "delivered"]
        assert message["attempts"][0]["status"] == 500
        assert message["attempts"][1]["error"] == "timeout"
        assert message["phone"].endswith("0000") and "13800000000" not in message["phone"]
    assert "gateway-secret-987" not in hub.log()
    await client.close()
    await api.close()


async def test_a_refused_message_is_a_recorded_permanent_failure(hubs, gateway) -> None:
    gateway.answer = lambda key, nth, body: (
        (400, 0.0, {}) if body["phone"] == "13900000400" else (200, 0.0, {})
    )
    hub = hubs.start(**_webhook(gateway))
    api = Api(hub)
    refused = await api.request(*XIGONG, category="police", caller_phone="13900000400")
    fine = await api.request(*XIGONG, category="fire")

    async def both_failed() -> list[dict[str, Any]]:
        messages = await _ledger_messages(api, refused["id"])
        return messages if [m["state"] for m in messages] == ["failed", "failed"] else []

    for message in await eventually(both_failed, timeout_s=15):
        assert [a["status"] for a in message["attempts"]] == [400]  # never tried again
        assert message["error"] == "HTTP 400"
    assert sum(1 for k, _, _ in gateway.received if k.startswith(refused["id"])) == 2
    assert sorted(k for k in gateway.order if k.startswith(fine["id"])) == [
        f"{fine['id']}:received:1",
        f"{fine['id']}:transferred:1",
    ]
    await api.close()


async def test_a_killed_hub_leaves_its_messages_to_another(hubs, gateway, redis_url) -> None:
    """The gateway is down (503), then slow; the hub sending is killed mid-send. A second
    hub delivers every message; none is effectively delivered twice (the gateway dedupes by
    Idempotency-Key; what it received twice with one key is the documented at-least-once)."""
    up = threading.Event()
    inflight = threading.Event()

    def answer(key: str, nth: int, body: dict[str, Any]) -> tuple[int, float, dict[str, str]]:
        if not up.is_set():
            return 503, 0.0, {"Retry-After": "1"}
        inflight.set()
        return 200, 0.5, {}

    gateway.answer = answer
    first = hubs.start(**_webhook(gateway))
    api = Api(first)
    created = [await api.request(*XIGONG, category=c) for c in ("police", "fire", "medical")]
    keys_wanted = {f"{r['id']}:{kind}:1" for r in created for kind in ("received", "transferred")}
    await eventually(lambda: _async(len({k for k, _, _ in gateway.received}) >= 3), timeout_s=15)
    up.set()
    await eventually(lambda: _async(inflight.is_set()), timeout_s=15)
    first.kill()  # mid-send: its leases run out, then another process takes them
    await api.close()
    second = hubs.start(**_webhook(gateway))
    api = Api(second)

    async def all_in() -> bool:
        return set(gateway.delivered) >= keys_wanted

    await eventually(all_in, timeout_s=60)
    for request in created:
        mine = [k for k in gateway.order if k.startswith(request["id"])]
        assert [k.split(":")[1] for k in mine] == ["received", "transferred"]
    # At most the messages in flight when the hub died reached the gateway twice, each time
    # with its one key (one per request: only a request's oldest message is ever sent).
    assert sum(count - 1 for count in gateway.delivered.values()) <= len(created)
    assert max(gateway.delivered.values()) == 2  # the one in flight: sent again by the second

    async def recorded() -> bool:
        states = [m["state"] for r in created for m in await _ledger_messages(api, r["id"])]
        return states == ["delivered"] * 6

    await eventually(recorded, timeout_s=30)
    for request in created:
        for message in await _ledger_messages(api, request["id"]):
            assert sum(a["outcome"] == "delivered" for a in message["attempts"]) >= 1
    await api.close()


async def _async(value: Any) -> Any:
    return value


async def test_intake_tells_the_number_in_the_log_file(hubs, monkeypatch) -> None:
    monkeypatch.setenv("HUB_LOG_LEVEL", "info")
    hub = hubs.start(citizen_poll_s=0.1)  # the default sender: the log file
    api = Api(hub)
    created = await api.request(*XIGONG, caller_phone="13812345678")
    path = hubs.tmp / "var" / "citizen-messages.log"

    async def logged() -> list[dict[str, Any]]:
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    (line,) = await eventually(logged)
    assert line["request"] == created["id"] and created["id"] in line["text"]
    assert line["phone"] == "13812345678" and line["event"] == "received_unit"
    assert line["idempotency_key"] == f"{created['id']}:received_unit:1"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    await eventually(lambda: _async("citizen message" in hub.log()))
    assert "13812345678" not in hub.log() and "*******5678" in hub.log()
    await api.close()


async def test_messages_of_a_request_by_role(hubs) -> None:
    hub = hubs.start(citizen_poll_s=0.1)
    api = Api(hub)
    created = await api.request(*XIGONG)
    await eventually(lambda: _ledger_messages(api, created["id"]))
    url = f"/api/v1/requests/{created['id']}/messages"
    assert (await api.http.get(url, headers=auth("calltaker"))).status_code == 403
    assert (await api.http.get(url)).status_code == 401
    missing = await api.http.get(
        "/api/v1/requests/20200101-000001/messages", headers=auth("center")
    )
    assert missing.status_code == 404
    for unit, status in (("water", 200), ("gas", 403)):
        token = await desk_token(api.http, unit)
        answer = await api.http.get(url, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == status, answer.text
    await api.close()


def test_a_webhook_without_url_stops_the_start() -> None:
    from server.citizen.senders import make_sender
    from server.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="DISPATCH_CITIZEN_WEBHOOK_URL"):
        make_sender(Settings(citizen_sender="webhook"))
