"""A month built by hand, as the ledger holds it (request rows and event rows): the fixture
of the scorecard tests, pure (tests/test_scorecard.py) and through a real database
(tests/test_reports.py). Every figure of it is worked out by hand in test_scorecard.py."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from server.ledger.fold import sort_key
from server.reports import periods

ZONE = ZoneInfo("Asia/Shanghai")
MONTH = periods.month("2026-03", ZONE)
T = MONTH.start + 86_400  # 2 March, 00:00 in Luoyang
AS_OF = MONTH.end + 60
LIMITS = {"accept_by": 300.0, "arrive_by": 1_800.0, "resolve_by": 14_400.0}

_SEQUENCE = itertools.count()  # stream ids unique across requests recorded at the same moment
Step = tuple[str, float, str] | tuple[str, float, str, dict[str, Any]]
Recorded = tuple[dict[str, Any], list[dict[str, Any]]]


def recorded(
    request_id: str,
    unit: str,
    received: float,
    state: str,
    steps: Sequence[Step],
    **row: Any,
) -> Recorded:
    """One request as the ledger holds it: its row (deadlines from receipt, the first
    acceptance and arrival as the ledger's fold keeps them) and its event rows, each
    recorded in the stream of the unit named."""
    events = []
    for kind, offset, holder, *extra in steps:
        at = received + offset
        stream_id = f"{int(at * 1000)}-{next(_SEQUENCE)}"
        payload = {"type": kind, "request": request_id, "at": at, **(extra[0] if extra else {})}
        events.append(
            {
                "unit": holder,
                "stream_id": stream_id,
                "sort_key": sort_key(stream_id),
                "request_id": request_id,
                "type": kind,
                "at": at,
                "by": "squad:S1",
                "data": json.dumps(payload),
            }
        )
    first = {
        f"{kind}_at": next((e["at"] for e in events if e["type"] == kind), None)
        for kind in ("accepted", "arrived", "resolved")
    }
    full = {
        "id": request_id,
        "unit": unit,
        "category": "water_main_burst",
        "district": "xigong",
        "route": "linkage",
        "state": state,
        "received_at": received,
        "caller_phone": "13800000000",
        "description": "pipe burst",
        "address": "中州路 1号",
        "lat": 34.67,
        "lon": 112.445,
        **{name: received + limit for name, limit in LIMITS.items()},
        **first,
        **row,
    }
    return full, events


def the_month() -> list[Recorded]:
    t = T
    late = MONTH.end - 100
    return [
        # water: everything on time
        recorded(
            "W1",
            "water",
            t,
            "resolved",
            [
                ("offered", 1, "water"),
                ("accepted", 100, "water"),
                ("arrived", 1000, "water"),
                ("resolved", 5000, "water"),
            ],
        ),
        # water: an offer left to expire, late acceptance and arrival (two notices), a
        # promise that moved the resolution deadline, kept
        recorded(
            "W2",
            "water",
            t + 10,
            "resolved",
            [
                ("offered", 1, "water"),
                ("offer_expired", 61, "water"),
                ("offered", 62, "water"),
                ("notice_issued", 300, "water", {"notice_kind": "accept", "level": 1}),
                ("accepted", 400, "water"),
                ("notice_issued", 1800, "water", {"notice_kind": "arrive", "level": 1}),
                ("arrived", 2000, "water"),
                ("deferred", 2100, "water", {"until": t + 10 + 20_000}),
                ("resolved", 19_000, "water"),
            ],
            resolve_by=t + 10 + 20_000,
        ),
        # water disputes it, the center reassigns it to power; power resolves it late (two
        # notices, power's); the first acceptance stands for the accept limit
        recorded(
            "W3",
            "power",
            t + 20,
            "resolved",
            [
                ("offered", 1, "water"),
                ("accepted", 60, "water"),
                ("disputed", 120, "water"),
                ("reassigned", 200, "water", {"unit": "power"}),
                ("offered", 210, "power"),
                ("accepted", 700, "power"),
                ("arrived", 1500, "power"),
                ("notice_issued", 14_400, "power", {"notice_kind": "resolve", "level": 1}),
                ("notice_issued", 16_200, "power", {"notice_kind": "resolve", "level": 2}),
                ("resolved", 20_000, "power"),
            ],
        ),
        # water: received 100 s before the month ends, judged a minute after: pending
        recorded("W4", "water", late, "offered", [("offered", 1, "water")]),
        # water: cancelled as a duplicate before its accept limit: nothing to judge
        recorded(
            "W5",
            "water",
            t + 40,
            "cancelled",
            [("cancelled", 200, "water", {"reason": "duplicate"})],
        ),
        # power: resolved, reopened (a spot check found it not fixed) with a new deadline,
        # resolved again in time
        recorded(
            "P1",
            "power",
            t + 50,
            "resolved",
            [
                ("offered", 1, "power"),
                ("accepted", 50, "power"),
                ("arrived", 900, "power"),
                ("resolved", 3000, "power"),
                ("reopened", 10_000, "power"),
                ("offered", 10_001, "power"),
                ("resolved", 25_000, "power"),
            ],
            resolve_by=t + 50 + 30_000,
        ),
        # power disputes it, the center upholds: power goes on with it
        recorded(
            "P2",
            "power",
            t + 60,
            "resolved",
            [
                ("offered", 1, "power"),
                ("accepted", 30, "power"),
                ("disputed", 60, "power"),
                ("upheld", 300, "power"),
                ("offered", 301, "power"),
                ("accepted", 320, "power"),
                ("arrived", 1000, "power"),
                ("resolved", 4000, "power"),
            ],
        ),
        # gas: a promise not kept; still open at the end of the month
        recorded(
            "G1",
            "gas",
            t + 70,
            "deferred",
            [
                ("offered", 1, "gas"),
                ("accepted", 100, "gas"),
                ("arrived", 600, "gas"),
                ("deferred", 700, "gas", {"until": t + 70 + 8000}),
                ("notice_issued", 8000, "gas", {"notice_kind": "promise", "level": 1}),
            ],
            resolve_by=t + 70 + 8000,
        ),
        # handed to the police: no unit's
        recorded("X1", "-", t + 80, "transferred", [], route="police", category="police"),
    ]
