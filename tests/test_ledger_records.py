"""The supervision center's record in the ledger: notices (issued, escalated, closed, by
whose step), actions (disputes, promises, rulings, cancellations, reopenings, notes), the
caller's messages and their delivery attempts; and the request filters (overdue, notice,
caller phone, squad).

Pure tests of the derivation, then the server's own code (intake, the center's actions,
the notices, the citizen outbox) against a real Redis and a real database (SQLite and
PostgreSQL: the fixtures of tests/conftest.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from server.actions import NewRequest
from server.citizen.compose import Message
from server.citizen.delivery import Attempt, Outcome
from server.city import load_city
from server.components import Components, build_components
from server.ledger import (
    Ledger,
    find_actions,
    find_messages,
    find_notices,
    find_requests,
)
from server.ledger.fold import LedgerEvent, parse_entry
from server.ledger.records import derive, statements
from server.lifecycle import Cancelled, Deferred, Disputed, Offered, SquadStep
from server.settings import Settings
from server.store import keys
from server.store.requests import Actor
from server.store.timers import TimerKind
from tests.helpers import XIGONG
from tests.test_ledger import Desk, drain

# The ledger's fixtures: a SQLite file, or a fresh PostgreSQL database (skipped, visibly,
# when none answers).
CENTER = Actor("center", "li")
UNITS = ["water", "gas", "power"]


# ---- pure: events -> rows ---------------------------------------------------------------------


def _event(n: int, kind: str, stream: str = "water", **data: Any) -> LedgerEvent:
    """Event ``n`` of request R1, as recorded in ``stream``'s unit."""
    payload = {"type": kind, "request": "R1", "at": 1000.0 + n, "by": "system", **data}
    event = parse_entry(stream, f"1-{n}", {"e": json.dumps(payload)})
    assert event is not None
    return event


NOTICE_STORY = [
    _event(
        1,
        "notice_issued",
        by="system:supervision",
        notice="R1-accept-1",
        notice_kind="accept",
        level=1,
        due_at=990.0,
        squad="S1",
    ),
    _event(
        2,
        "notice_issued",
        by="system:supervision",
        notice="R1-accept-2",
        notice_kind="accept",
        level=2,
        due_at=990.0,
    ),
    _event(
        3,
        "notice_closed",
        notice="R1-accept-1",
        notice_kind="accept",
        level=1,
        closed_by="accepted",
        met_by="squad:S1",
    ),
    _event(
        4,
        "notice_closed",
        notice="R1-accept-2",
        notice_kind="accept",
        level=2,
        closed_by="accepted",
        met_by="squad:S1",
    ),
]


def test_a_notice_is_issued_escalated_and_closed_whatever_the_order() -> None:
    expected = {
        "R1-accept-1": {
            "id": "R1-accept-1",
            "request_id": "R1",
            "unit": "water",
            "kind": "accept",
            "level": 1,
            "squad": "S1",
            "due_at": 990.0,
            "issued_at": 1001.0,
            "issued_by": "system:supervision",
            "escalated_at": 1002.0,
            "closed_at": 1003.0,
            "closed_event": "accepted",
            "closed_by": "squad:S1",
        },
        "R1-accept-2": {
            "id": "R1-accept-2",
            "request_id": "R1",
            "unit": "water",
            "kind": "accept",
            "level": 2,
            "squad": None,
            "due_at": 990.0,
            "issued_at": 1002.0,
            "issued_by": "system:supervision",
            "closed_at": 1004.0,
            "closed_event": "accepted",
            "closed_by": "squad:S1",
        },
    }
    in_order = derive(NOTICE_STORY).notices
    # Batches arriving backwards and twice (several consumers, a takeover): the same rows.
    merged: dict[str, dict[str, Any]] = {}
    for batch in ([NOTICE_STORY[3]], [NOTICE_STORY[2], NOTICE_STORY[0]], NOTICE_STORY):
        for key, row in derive(batch).notices.items():
            current = merged.setdefault(key, {})
            for name, value in row.items():
                if current.get(name) is None:
                    current[name] = value
    for found in (in_order, merged):
        assert {k: {n: v for n, v in row.items() if v is not None} for k, row in found.items()} == {
            k: {n: v for n, v in row.items() if v is not None} for k, row in expected.items()
        }


def test_actions_messages_and_attempts_are_derived_with_who_acted() -> None:
    events = [
        _event(1, "disputed", by="squad:S1", squad="S1", reason="not ours"),
        _event(2, "reassigned", by="center:li", unit="gas", from_unit="water", note="gas"),
        _event(3, "reassigned_in", "gas", by="center:li", unit="gas"),  # not an action
        _event(4, "cancelled", "gas", by="center:li", reason="duplicate", duplicate_of="R0"),
        _event(
            5,
            "citizen_message_queued",
            by="system:citizen",
            key="K1",
            message="M1",
            event="received",
            lang="zh",
            text="收到",
            phone="*******0000",
        ),
        _event(
            6,
            "citizen_message_attempt",
            key="K1",
            message="M1",
            attempt=1,
            outcome="retry",
            status=503,
            retry_at=1010.0,
        ),
        _event(
            7,
            "citizen_message_attempt",
            key="K1",
            message="M1",
            attempt=2,
            outcome="failed",
            status=400,
            error="HTTP 400",
        ),
        _event(8, "citizen_message_failed", key="K1", message="M1", attempts=2, error="HTTP 400"),
        _event(9, "accepted", squad="S1"),  # a routine step: not in the center's record
    ]
    records = derive(events)
    assert [(a["action"], a["by"], a["unit"]) for a in records.actions] == [
        ("disputed", "squad:S1", "water"),
        ("reassigned", "center:li", "water"),
        ("cancelled", "center:li", "gas"),
    ]
    assert records.actions[0]["reason"] == "not ours" and records.actions[0]["squad"] == "S1"
    assert (records.actions[1]["from_unit"], records.actions[1]["to_unit"]) == ("water", "gas")
    assert records.actions[2]["duplicate_of"] == "R0"
    (message,) = records.messages.values()
    assert message["queued_by"] == "system:citizen" and message["text"] == "收到"
    assert (message["outcome"], message["attempts"], message["error"]) == ("failed", 2, "HTTP 400")
    assert [(a["attempt"], a["outcome"], a["status"]) for a in records.attempts] == [
        (1, "retry", 503),
        (2, "failed", 400),
    ]
    # Every statement carries every column of its table (one executemany per table).
    for statement, rows in statements("sqlite", records):
        names = {c.name for c in statement.table.columns}  # type: ignore[attr-defined]
        assert all(set(row) <= names for row in rows)


# ---- the server's own code, real Redis and database -------------------------------------------


class Gateway:
    """The SMS gateway's answers, per message: the first message's every attempt is refused
    for good, the second's first attempt meets a busy gateway; the others are delivered."""

    def __init__(self) -> None:
        self.order: list[str] = []

    async def send(self, message: Message) -> Attempt:
        if message.key not in self.order:
            self.order.append(message.key)
        if message.key == self.order[0]:
            return Attempt(Outcome.FAILED, 400, "HTTP 400")
        if len(self.order) > 1 and message.key == self.order[1]:
            return Attempt(Outcome.RETRY, 503, "HTTP 503")
        return Attempt(Outcome.DELIVERED, 200)

    async def close(self) -> None:
        return None


async def _intake(services: Components, phone: str = "13800000000") -> str:
    created = await services.intake.create(
        NewRequest(
            caller_phone=phone,
            category="water_main_burst",
            description="water in the street",
            lat=XIGONG[0],
            lon=XIGONG[1],
        ),
        Actor("calltaker", "wang"),
    )
    return str(created["id"])


async def _dispute(desk: Desk, request_id: str, reason: str) -> None:
    await desk.step("water", request_id, Offered("S1", "A1"))
    await desk.step("water", request_id, Disputed("A1", reason))


async def test_the_center_record_lands_in_the_ledger(redis: Redis, ledger: Ledger) -> None:
    services = build_components(Settings(), redis, load_city(), ledger)
    desk = Desk(redis, ledger)

    # Late, supervised, escalated, disputed, upheld, noted, cancelled.
    late = await _intake(services, "13900000001")
    await desk.step("water", late, Offered("S1", "A1"))  # offered: the accept deadline runs
    await redis.hset(keys.request("water", late), "accept_by", repr(time.time() - 5))
    await services.notices.on_timer("water", TimerKind.DEADLINE, f"{late}:accept")
    await services.notices.on_timer("water", TimerKind.ESCALATE, f"{late}:accept:2")
    await desk.step("water", late, Disputed("A1", "not a water main"))
    await services.center.uphold(late, "it is the water main", CENTER)
    await services.center.note(late, "called the caller back", CENTER)
    await services.center.cancel(late, "withdrawn", "the caller fixed it", "", CENTER)

    # Disputed and moved to the gas company; a duplicate of it cancelled.
    moved = await _intake(services, "13900000002")
    await _dispute(desk, moved, "gas, not water")
    await services.center.reassign(moved, "gas", "gas_leak_smell", [], "the gas valve", CENTER)
    twin = await _intake(services, "13900000003")
    await services.center.cancel(twin, "duplicate", "", moved, CENTER)

    # Resolved, then reopened by the center; a promise kept on the way.
    fixed = await _intake(services, "13900000004")
    await desk.step("water", fixed, Offered("S2", "A2"))
    await desk.step("water", fixed, SquadStep("accept", "A2"))
    await desk.step("water", fixed, SquadStep("arrive", "A2"))
    await desk.step("water", fixed, Deferred("A2", time.time() + 3600, "parts tomorrow"))
    await desk.step("water", fixed, SquadStep("resolve", "A2", note="replaced the pipe"))
    await services.center.reopen(fixed, "still leaking", CENTER)

    gateway = Gateway()
    for _ in range(3):
        await services.citizen.outbox.deliver_due(gateway, UNITS)
    await drain(ledger, redis, UNITS)

    # Notices: issued by the supervision, escalated, closed by the center's cancellation.
    notices = await find_notices(ledger, request_id=late)
    assert [(n["id"], n["level"], n["state"]) for n in notices] == [
        (f"{late}-accept-2", 2, "closed"),
        (f"{late}-accept-1", 1, "closed"),
    ]
    first = notices[1]
    assert first["issued_by"] == "system:supervision" and first["unit"] == "water"
    assert first["escalated_at"] == pytest.approx(notices[0]["issued_at"])
    assert {(n["closed_event"], n["closed_by"]) for n in notices} == {("cancelled", "center:li")}
    assert await find_notices(ledger, state="open") == []
    assert [n["id"] for n in await find_notices(ledger, level=2)] == [f"{late}-accept-2"]

    # Actions, each with who acted.
    acted = await find_actions(ledger, request_id=late)
    assert [(a["action"], a["by"]) for a in reversed(acted)] == [
        ("disputed", "squad:S1"),
        ("upheld", "center:li"),
        ("note", "center:li"),
        ("cancelled", "center:li"),
    ]
    assert acted[0]["reason"] == "withdrawn" and acted[0]["note"] == "the caller fixed it"
    assert acted[2]["note"] == "it is the water main" and acted[2]["squad"] == "S1"
    (ruling,) = await find_actions(ledger, request_id=moved, action="reassigned")
    assert (ruling["from_unit"], ruling["to_unit"], ruling["by"]) == ("water", "gas", "center:li")
    assert ruling["category"] == "gas_leak_smell"
    assert [a["action"] for a in await find_actions(ledger, unit="gas")] == ["reassigned"]
    (dup,) = await find_actions(ledger, request_id=twin)
    assert (dup["action"], dup["reason"], dup["duplicate_of"]) == ("cancelled", "duplicate", moved)
    assert [a["action"] for a in reversed(await find_actions(ledger, request_id=fixed))] == [
        "deferred",
        "reopened",
    ]
    by_li = await find_actions(ledger, by="center:li", limit=100)
    assert len(by_li) == 6 and len(await find_actions(ledger, by="center:li", limit=2)) == 2
    [twin_row] = await find_requests(ledger, caller_phone="13900000003")
    assert (twin_row["cancel_reason"], twin_row["duplicate_of"]) == ("duplicate", moved)

    # The caller's messages and every delivery attempt.
    messages = await find_messages(ledger, limit=1000)
    assert messages and all(m["phone"].startswith("*******") for m in messages)
    assert all("1390000" not in json.dumps(m) for m in messages)  # masked
    failed = await find_messages(ledger, outcome="failed")
    assert [(m["attempts"], m["error"], len(m["tries"])) for m in failed] == [(1, "HTTP 400", 1)]
    pending = await find_messages(ledger, outcome="pending")
    assert any(t["outcome"] == "retry" and t["status"] == 503 for m in pending for t in m["tries"])
    delivered = await find_messages(ledger, outcome="delivered")
    assert delivered and all(m["tries"][-1]["outcome"] == "delivered" for m in delivered)
    assert {m["queued_by"] for m in messages} == {"system:citizen"}

    # Requests by notice, by squad.
    assert [r["id"] for r in await find_requests(ledger, notice="accept")] == [late]
    assert [r["id"] for r in await find_requests(ledger, notice="any", notice_level=2)] == [late]
    assert await find_requests(ledger, notice="resolve") == []
    assert [r["id"] for r in await find_requests(ledger, squad="S2")] == []  # reopened: queued


async def test_overdue_is_a_missed_deadline(redis: Redis, ledger: Ledger) -> None:
    """A deadline is missed when its milestone came after it, or did not come while the
    deadline passed with the request open (until now, or until it was cancelled)."""
    desk = Desk(redis, ledger)
    now = time.time()
    late_accept = await desk.receive(at=now - 1000)  # accept_by now - 700
    await desk.handle("water", late_accept, upto="accept", start=now - 600)
    on_time = await desk.receive(at=now - 100)
    await desk.handle("water", on_time, start=now - 90)
    never = await desk.receive(at=now - 1000)  # still queued
    cancelled_early = await desk.receive(at=now - 1000)
    await desk.step("water", cancelled_early, Cancelled("withdrawn"), at=now - 950)
    cancelled_late = await desk.receive(at=now - 1000)
    await desk.step("water", cancelled_late, Cancelled("withdrawn"), at=now - 500)
    late_arrival = await desk.receive(at=now - 3000)  # arrive_by now - 1200
    await desk.step("water", late_arrival, Offered("S-late", "A-late"), now - 2900)
    await desk.step("water", late_arrival, SquadStep("accept", "A-late"), now - 2890)
    await desk.step("water", late_arrival, SquadStep("arrive", "A-late"), now - 1000)
    broken_promise = await desk.receive(at=now - 90_000)
    assignment = f"A-{broken_promise}"
    await desk.step("water", broken_promise, Offered("S-p", assignment), now - 89_990)
    await desk.step("water", broken_promise, SquadStep("accept", assignment), now - 89_980)
    await desk.step("water", broken_promise, SquadStep("arrive", assignment), now - 89_000)
    await desk.step(
        "water", broken_promise, Deferred(assignment, now - 5000, "parts"), now - 88_000
    )
    await desk.step("water", broken_promise, SquadStep("resolve", assignment), now - 1000)
    await drain(ledger, redis, ["water"])

    async def ids(**filters: Any) -> set[str]:
        return {r["id"] for r in await find_requests(ledger, now=now, limit=None, **filters)}

    assert await ids(overdue="accept") == {late_accept, never, cancelled_late}
    assert await ids(overdue="arrive") == {late_arrival}
    assert await ids(overdue="resolve") == {broken_promise}
    missed = {late_accept, never, cancelled_late, late_arrival, broken_promise}
    assert await ids(overdue="any") == missed
    assert await ids() == missed | {on_time, cancelled_early}
    assert await ids(overdue="any", squad="S-water") == {late_accept}
    assert await ids(overdue="any", caller_phone="13800000000", state="queued") == {never}
    with pytest.raises(ValueError, match="overdue"):
        await find_requests(ledger, overdue="soon")


async def test_notice_close_event_names_who_met_it(redis: Redis) -> None:
    """apply.lua puts the step's actor on the notice_closed event (``met_by``)."""
    services = build_components(Settings(), redis, load_city())
    request_id = await _intake(services)
    await redis.hset(keys.request("water", request_id), "accept_by", repr(time.time() - 5))
    await services.notices.on_timer("water", TimerKind.DEADLINE, f"{request_id}:accept")
    await services.center.cancel(request_id, "unfounded", "", "", CENTER)
    closed = [
        json.loads(fields[b"e"])
        for _, fields in await redis.xrange(keys.events("water"))
        if json.loads(fields[b"e"])["type"] == "notice_closed"
        and json.loads(fields[b"e"])["request"] == request_id
    ]
    assert [(e["closed_by"], e["met_by"], e["by"]) for e in closed] == [
        ("cancelled", "center:li", "system")
    ]
