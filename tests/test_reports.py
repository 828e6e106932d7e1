"""The center's reports: the spot-check draw, the circular, the fortnightly report, the CSV
and SVG forms (pure); the month through a real ledger (SQLite and PostgreSQL), a closed
month that late events do not change, draws that never repeat; and the HTTP API in process
(roles, CSV, a ``not_fixed`` callback that reopens the request with a notice)."""

from __future__ import annotations

import csv
import io
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import msgspec
import pytest
from sqlalchemy import update

from server.city import load_city
from server.ledger import Ledger, default_database_url, tables
from server.lifecycle import RequestView, SquadStep, State, transition
from server.reports import charts, exports, fortnight, periods, sampling, store
from server.reports.fortnight import FortnightReport
from server.reports.policy import Fortnight, Policy, Weights
from server.reports.sampling import Candidate
from server.reports.scorecard import facts_of, ledger_events, scorecards
from server.reports.service import WEEKLY_DRAWER, Reports, UnitName, circular_rows
from server.store.requests import Actor, event_json
from tests.helpers import XIGONG, auth, desk_auth, eventually
from tests.report_month import AS_OF, MONTH, ZONE, Recorded, T, recorded, the_month

CITY = load_city()
EQUAL = Policy(weights=Weights(**{name: 1 for name in Weights.__struct_fields__}))
SPOT = [
    ("water", "satisfied"),
    ("water", "satisfied"),
    ("water", "not_satisfied"),
    ("water", "unreachable"),
    ("power", "not_fixed"),
]


# ---- the draw (pure) --------------------------------------------------------------------------


def _candidates(unit: str, counts: dict[str, int], prefix: str = "") -> list[Candidate]:
    return [
        Candidate(f"{prefix}{unit}-{category}-{n:03d}", unit, category)
        for category, count in counts.items()
        for n in range(count)
    ]


def test_the_draw_is_stratified_by_category() -> None:
    pool = _candidates("water", {"burst": 80, "no_water": 20}) + _candidates("gas", {"smell": 2})
    picked = sampling.draw(pool, 5, "seed")
    by = Counter((c.unit, c.category) for c in picked)
    assert by == {("water", "burst"): 4, ("water", "no_water"): 1, ("gas", "smell"): 2}
    assert sampling.quotas({"a": 5, "b": 3, "c": 2}, 5) == {"a": 3, "b": 1, "c": 1}
    assert sampling.quotas({"a": 1, "b": 1}, 1) == {"a": 1, "b": 0}  # ties: by code
    assert sampling.quotas({"a": 2, "b": 1}, 9) == {"a": 2, "b": 1}  # all of them
    for counts, size in (({"a": 7, "b": 6, "c": 1}, 4), ({"a": 1, "b": 1, "c": 1}, 2)):
        given = sampling.quotas(counts, size)
        assert sum(given.values()) == size
        assert all(given[c] <= counts[c] for c in counts)


def test_the_draw_is_reproducible_from_its_seed_and_never_repeats() -> None:
    pool = _candidates("water", {"burst": 30, "no_water": 10})
    first = sampling.draw(pool, 4, "2026-W10")
    assert sampling.draw(list(reversed(pool)), 4, "2026-W10") == first  # order does not matter
    assert sampling.draw(pool, 4, "another seed") != first
    drawn: list[str] = []
    while len(drawn) < len(pool):
        picked = sampling.draw(pool, 4, "2026-W10", excluded=set(drawn))
        assert picked and not set(c.id for c in picked) & set(drawn)
        drawn += [c.id for c in picked]
    assert sorted(drawn) == sorted(c.id for c in pool)
    assert sampling.draw(pool, 4, "2026-W10", excluded=set(drawn)) == []


def test_the_circular_ranks_units_by_pass_rate() -> None:
    checks = [
        {"unit": "water", "outcome": "satisfied"},
        {"unit": "water", "outcome": "not_fixed"},
        {"unit": "water", "outcome": "unreachable"},
        {"unit": "power", "outcome": "satisfied"},
        {"unit": "gas", "outcome": "satisfied"},
        {"unit": "roads", "outcome": None},  # drawn, not called back yet
    ]
    names = {"water": UnitName("供水", "Water")}
    rows = circular_rows(checks, names)
    assert [(r.unit, r.rank, r.pass_rate) for r in rows] == [
        ("gas", 1, 1.0),
        ("power", 1, 1.0),
        ("water", 3, 0.5),
        ("roads", None, None),
    ]
    water = rows[2]
    assert (water.name_zh, water.drawn, water.checked, water.unreachable) == ("供水", 3, 3, 1)
    assert [r.unit for r in circular_rows(checks, names, units={"water"})] == ["water"]


# ---- the fortnight (pure) ---------------------------------------------------------------------


def _near(metres_north: float) -> tuple[float, float]:
    return XIGONG[0] + metres_north / 111_320.0, XIGONG[1]


def test_repeat_locations_are_found_within_the_radius() -> None:
    policy = Fortnight(repeat_radius_m=200, repeat_min=3)
    rows = [
        {"id": f"R{n}", "category": "burst", "lat": lat, "lon": lon, "received_at": T + n}
        for n, (lat, lon) in enumerate([_near(0), _near(120), _near(190), _near(1000)])
    ]
    rows.append({"id": "R9", "category": "smell", "lat": XIGONG[0], "lon": XIGONG[1]})
    rows.append({"id": "R0~gas", "category": "burst", "lat": XIGONG[0], "lon": XIGONG[1]})
    found = fortnight.repeats(rows, policy)
    assert len(found) == 1
    assert [i.id for i in found[0].requests] == ["R0", "R1", "R2"]
    assert found[0].count == 3 and found[0].category == "burst"
    assert found[0].requests[0].link == "/api/v1/requests/R0"
    assert fortnight.repeats(rows, Fortnight(repeat_radius_m=1100, repeat_min=4))[0].count == 4
    assert 119 < fortnight.distance_m(_near(0), _near(120)) < 121


def test_chronic_overdue_and_open_notices() -> None:
    facts = [facts_of(row, ledger_events(events), AS_OF) for row, events in the_month()]
    policy = Fortnight(overdue_share=0.3, overdue_min=1)
    units = {o.key: o for o in fortnight.overdue(facts, "unit", policy, {"roads": ["Z1"]})}
    # water: W2 missed accept and arrive (1 of 4); power: W3 resolved late (1 of 3); gas:
    # G1 broke its promise (1 of 1)
    assert (units["water"].missed, units["water"].requests) == (1, 4)
    assert not units["water"].chronic and units["gas"].chronic and units["power"].chronic
    assert units["roads"].overdue_now == ["Z1"] and units["roads"].requests == 0
    assert [o.key for o in fortnight.overdue(facts, "unit", policy, {})][0] == "gas"
    rows = [
        _notice("A-accept-1", "water", 1.0, None),
        _notice("A-accept-2", "water", 2.0, None),
        _notice("B-resolve-2", "water", 3.0, 4.0),  # closed
        _notice("C-promise-3", "gas", 5.0, None),
    ]
    found = fortnight.open_notices(rows, level=2)
    assert [(n.id, n.level, n.unit) for n in found] == [
        ("C-promise-3", 3, "gas"),
        ("A-accept-2", 2, "water"),
    ]
    assert found[1].link == "/api/v1/requests/A"


def _notice(ident: str, unit: str, issued: float, closed: float | None) -> dict[str, Any]:
    """A row of the ledger's notices."""
    request, kind, level = ident.rsplit("-", 2)
    return {
        "id": ident,
        "request_id": request,
        "unit": unit,
        "kind": kind,
        "level": int(level),
        "issued_at": issued,
        "closed_at": closed,
    }


# ---- CSV and SVG (pure) -----------------------------------------------------------------------


def _parse_csv(text: str) -> list[dict[str, str]]:
    assert text.startswith("\ufeff"), "a BOM for spreadsheet programs"
    return list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))


def test_the_exports_open_and_parse_and_neutralise_formulas() -> None:
    facts = [facts_of(row, ledger_events(events), AS_OF) for row, events in the_month()]
    cards = scorecards(facts, EQUAL, spot_checks=SPOT)
    names = {"water": ("供水", "=Water"), "power": ("供电", "Power")}
    rows = _parse_csv(exports.evaluation_csv("2026-03", cards, names, {}, closed=False))
    water = next(r for r in rows if r["unit"] == "water")
    assert water["name_zh"] == "供水" and water["name_en"] == "'=Water"
    assert (water["rank"], water["score"], water["requests"]) == ("1", "73.96", "4")
    assert (water["accept_on_time"], water["notices_accept"], water["spot_satisfied"]) == (
        "0.5",
        "1",
        "2",
    )
    assert water["accept_p90_s"] == "370.0" and water["record"] == "live"
    checks = [
        {
            "id": 1,
            "week": "2026-W10",
            "unit": "water",
            "request_id": "20260302-000001",
            "outcome": "not_satisfied",
            "note": "+cmd|' /C calc'!A0",
            "description": '=HYPERLINK("http://evil","x")',
            "address": "@SUM(1)",
            "caller_phone": "-13800000000",
        }
    ]
    parsed = _parse_csv(exports.spot_checks_csv(checks))[0]
    assert parsed["note"] == "'+cmd|' /C calc'!A0"
    assert parsed["description"].startswith("'=HYPERLINK")
    assert parsed["address"] == "'@SUM(1)" and parsed["caller_phone"] == "'-13800000000"
    report = FortnightReport(
        period="2026-03-02/14",
        start=0,
        end=1,
        as_of=1,
        disputes=[fortnight.OpenDispute("R1", "water", "burst", "xigong", 0, 1, "=not ours", "/x")],
        overdue_units=fortnight.overdue(facts, "unit", Fortnight(), {}),
        overdue_categories=[],
        repeats=[],
        notices=[],
    )
    sections = _parse_csv(exports.fortnight_csv(report))
    assert sections[0]["section"] == "dispute" and sections[0]["detail"] == "'=not ours"
    assert {row["section"] for row in sections} == {"dispute", "overdue_unit"}


def test_the_charts_are_svg_with_a_bar_per_unit_and_a_line_per_unit() -> None:
    drawn = charts.bars("得分 · 2026-03", [("供水", 74.58), ("<script>", 57.1), ("燃气", None)])
    root = ET.fromstring(drawn)
    svg = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{svg}svg"
    bars = [r for r in root.iter(f"{svg}rect") if r.find(f"{svg}title") is not None]
    assert len(bars) == 2 and float(bars[0].attrib["width"]) > float(bars[1].attrib["width"])
    assert "<script>" not in drawn and "&lt;script&gt;" in drawn
    line = charts.trend(
        "trend", ["2026-01", "2026-02", "2026-03"], {"water": [70, None, 80], "power": [1, 2, 3]}
    )
    root = ET.fromstring(line)
    assert len(list(root.iter(f"{svg}polyline"))) == 1  # water's months do not join
    assert len(list(root.iter(f"{svg}circle"))) == 5


def _shown(text: ET.Element) -> str:
    """What an SVG <text> shows: its own characters, not its tooltip's."""
    return (text.text or "") + "".join(child.tail or "" for child in text)


def test_the_charts_make_room_for_the_units_long_names() -> None:
    """Every unit's name, in either language, is drawn whole inside the chart: beside its
    bar (right-aligned, so it must not start left of 0) and in the trend's legend (it must
    end inside the width); a name beyond any sensible room is shortened, whole in a tooltip."""
    city = load_city()
    svg = "{http://www.w3.org/2000/svg}"
    for names in ([u.name_en for u in city.units], [u.name_zh for u in city.units]):
        root = ET.fromstring(charts.bars("score", [(name, 50.0) for name in names]))
        labels = [t for t in root.iter(f"{svg}text") if t.attrib.get("text-anchor") == "end"]
        assert sorted(_shown(t) for t in labels) == sorted(names)
        for label in labels:
            assert float(label.attrib["x"]) - charts.text_width(_shown(label)) >= 0
        root = ET.fromstring(charts.trend("trend", ["2026-01"], {n: [50.0] for n in names}))
        width = float(root.attrib["width"])
        legend = [t for t in root.iter(f"{svg}text") if _shown(t) in names]
        assert len(legend) == len(names)
        for label in legend:
            end = float(label.attrib["x"]) + charts.text_width(_shown(label))
            assert end <= width, (_shown(label), end, width)
    endless = "Luoyang " + "Very " * 100 + "Long Name"
    root = ET.fromstring(charts.bars("score", [(endless, 50.0)]))
    (label,) = [t for t in root.iter(f"{svg}text") if t.attrib.get("text-anchor") == "end"]
    shown = _shown(label)
    assert shown.endswith("…") and charts.text_width(shown) <= charts.LABEL_MAX
    assert label.find(f"{svg}title").text == endless  # type: ignore[union-attr]


# ---- through a real ledger ---------------------------------------------------------------------


async def _record(
    ledger: Ledger, requests: list[tuple[dict[str, Any], list[dict[str, Any]]]]
) -> None:
    columns = {c.name for c in tables.requests.columns}
    async with ledger.engine.begin() as conn:
        for row, events in requests:
            await conn.execute(
                tables.requests.insert(), {k: v for k, v in row.items() if k in columns}
            )
            if events:
                await conn.execute(tables.events.insert(), events)


async def _spot_outcomes(ledger: Ledger, outcomes: list[tuple[str, str]], at: float) -> None:
    async with ledger.engine.begin() as conn:
        for n, (unit, outcome) in enumerate(outcomes):
            await conn.execute(
                tables.spot_checks.insert().values(
                    week="2026-W10",
                    unit=unit,
                    request_id=f"S{n}",
                    seed="s",
                    drawn_at=at,
                    drawn_by="center:li",
                    outcome=outcome,
                    outcome_at=at,
                    outcome_by="center:li",
                )
            )


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_the_month_read_from_the_ledger_is_the_hand_built_month(ledger: Ledger) -> None:
    await _record(ledger, the_month())
    await _spot_outcomes(ledger, SPOT, T + 3600)
    reports = Reports(ledger.engine, CITY, EQUAL, Clock(AS_OF))
    computed = {c.unit: c for c in (await reports.compute(["2026-03"], AS_OF))["2026-03"]}
    facts = [facts_of(row, ledger_events(events), AS_OF) for row, events in the_month()]
    expected = {c.unit: c for c in scorecards(facts, EQUAL, spot_checks=SPOT)}
    for unit in ("water", "power", "gas"):
        assert computed[unit] == expected[unit], unit
    assert computed["water"].score == 73.96 and computed["water"].rank == 1
    assert set(computed) == {u.code for u in CITY.units}  # every unit has a card
    assert computed["telecom"].requests == 0 and computed["telecom"].rank is None
    february = (await reports.compute(["2026-02"], AS_OF))["2026-02"]
    assert all(c.requests == 0 for c in february)


async def test_a_closed_month_does_not_change_when_events_arrive_late(ledger: Ledger) -> None:
    await _record(ledger, the_month())
    clock = Clock(MONTH.start + 86_400)
    reports = Reports(ledger.engine, CITY, EQUAL, clock)
    with pytest.raises(store.Conflict, match="not over"):
        await reports.close("2026-03", "center:li")
    clock.now = AS_OF
    closed = await reports.close("2026-03", "center:li")
    assert closed.closed is not None and closed.closed.by == "center:li"
    assert closed.recomputed == []
    frozen = {c.unit: c for c in closed.units}
    before_record = await reports.record("water")
    with pytest.raises(store.Conflict, match="closed already"):
        await reports.close("2026-03", "center:zhao")

    # Late: W4 (open at the close) is accepted, reached and resolved; a March request the
    # ledger had not recorded arrives.
    w4_row, _ = next((r, e) for r, e in the_month() if r["id"] == "W4")
    late = w4_row["received_at"]
    late_events = recorded(
        "W4", "water", late, "resolved", [("accepted", 100, "water"), ("resolved", 900, "water")]
    )[1]
    async with ledger.engine.begin() as conn:
        await conn.execute(
            update(tables.requests)
            .where(tables.requests.c.id == "W4")
            .values(state="resolved", accepted_at=late + 100, resolved_at=late + 900)
        )
        for event in late_events:
            event["stream_id"] += "9"
            event["sort_key"] += "9"
        await conn.execute(tables.events.insert(), late_events)
    await _record(
        ledger, [recorded("W6", "water", T + 500, "resolved", [("resolved", 10, "water")])]
    )
    clock.now = AS_OF + 86_400

    again = await reports.evaluation("2026-03")
    assert {c.unit: c for c in again.units} == frozen  # the record, as closed
    assert again.closed is not None and again.closed.as_of == AS_OF
    recomputed = {c.unit: c for c in again.recomputed}
    assert set(recomputed) == {"water"}
    assert (frozen["water"].requests, recomputed["water"].requests) == (4, 5)
    assert frozen["water"].limits["accept"]["pending"] == 1
    assert recomputed["water"].limits["accept"]["pending"] == 0
    after_record = await reports.record("water", recompute=True)
    assert [m.figures for m in after_record.months] == [m.figures for m in before_record.months]
    assert after_record.months[0].recomputed == recomputed["water"]
    assert len(after_record.months) == 1
    assert after_record.months[0].weights == dict(EQUAL.weights.items())


def _resolved_rows(week: periods.Span, prefix: str) -> list[Any]:
    made = []
    for unit, counts in (
        ("water", {"water_main_burst": 9, "water_outage": 3}),
        ("power", {"power_outage": 2}),
    ):
        for category, count in counts.items():
            for n in range(count):
                received = week.start + 3600 * (n + 1)
                row, events = recorded(
                    f"{prefix}{unit}-{category}-{n}",
                    unit,
                    received,
                    "resolved",
                    [("resolved", 600, unit)],
                    category=category,
                    resolved_at=received + 600,
                )
                made.append((row, events))
    return made


async def test_draws_are_stratified_reproducible_and_never_repeat(
    ledger: Ledger, tmp_path: Path
) -> None:
    week = periods.week("2026-W10", ZONE)
    await _record(ledger, _resolved_rows(week, ""))
    reports = Reports(ledger.engine, CITY, EQUAL, Clock(week.end + 60))
    seed, first = await reports.draw("2026-W10", 4, "fixed-seed", "center:li")
    assert seed == "fixed-seed" and len(first) == 4 + 2  # power resolved only 2
    checks = await store.spot_checks(ledger.engine, week="2026-W10")
    water = Counter(c["category"] for c in checks if c["unit"] == "water")
    assert water == {"water_main_burst": 3, "water_outage": 1}
    assert all(c["caller_phone"] == "13800000000" and c["outcome"] is None for c in checks)

    twin = await Ledger.open(default_database_url(tmp_path / "twin"))
    try:
        await _record(twin, _resolved_rows(week, ""))
        twin_reports = Reports(twin.engine, CITY, EQUAL, Clock(week.end + 60))
        await twin_reports.draw("2026-W10", 4, "fixed-seed", "center:zhao")
        twin_checks = await store.spot_checks(twin.engine, week="2026-W10")
        assert [c["request_id"] for c in twin_checks] == [c["request_id"] for c in checks]
    finally:
        await twin.close()

    drawn = [c["request_id"] for c in checks]
    while True:
        _, more = await reports.draw("2026-W10", 4, None, "center:li")
        if not more:
            break
        drawn += [
            c["request_id"] for c in await store.spot_checks(ledger.engine) if c["id"] in more
        ]
    assert len(drawn) == len(set(drawn)) == 14  # every resolved request once, none twice


async def test_each_week_is_drawn_once_over_by_itself_unless_someone_drew_it(
    ledger: Ledger,
) -> None:
    week = periods.week("2026-W10", ZONE)
    await _record(ledger, _resolved_rows(week, ""))
    reports = Reports(ledger.engine, CITY, EQUAL)
    during = week.start + 3 * 86_400
    earlier = await reports.draw_last_week(during)  # W09: nothing resolved, nothing drawn
    assert earlier is not None and earlier == ("2026-W09", [])
    assert await store.spot_checks(ledger.engine, week="2026-W10") == []  # not over yet
    after = week.end + 3600  # Monday of W11: W10 is over
    drawn = await reports.draw_last_week(after)
    assert drawn is not None and drawn[0] == "2026-W10" and drawn[1]
    checks = await store.spot_checks(ledger.engine, week="2026-W10")
    assert {c["drawn_by"] for c in checks} == {WEEKLY_DRAWER}
    assert await reports.draw_last_week(after + 3600) is None  # drawn: not again
    assert len(await store.spot_checks(ledger.engine, week="2026-W10")) == len(checks)


async def test_the_fortnight_from_the_ledger(ledger: Ledger) -> None:
    month = the_month()
    disputed, events = recorded(
        "D1", "water", T + 100, "disputed", [("disputed", 50, "water", {"reason": "gas pipe"})]
    )
    await _record(ledger, [*month, (disputed, events)])
    reports = Reports(ledger.engine, CITY, EQUAL, Clock(T + 86_400 * 3))
    found = await reports.fortnight(periods.day_of(T, ZONE))
    assert [(d.id, d.reason) for d in found.disputes] == [("D1", "gas pipe")]
    assert found.disputes[0].link == "/api/v1/requests/D1"
    # the fortnight's requests sit on one spot: one cluster of the burst category (W4 comes
    # at the end of the month; X1 is the police's)
    assert found.repeats and found.repeats[0].count == 8
    gas = next(o for o in found.overdue_units if o.key == "gas")
    assert gas.overdue_now == ["G1"]  # its promise passed, still open
    assert found.notices == []
    async with ledger.engine.begin() as conn:
        for ident, closed in (("G1-promise-2", None), ("W3-resolve-2", T + 20_000)):
            request, kind, level = ident.rsplit("-", 2)
            await conn.execute(
                tables.notices.insert().values(
                    id=ident,
                    request_id=request,
                    unit=request[0].replace("G", "gas").replace("W", "power"),
                    kind=kind,
                    level=int(level),
                    issued_at=T + 9000,
                    closed_at=closed,
                )
            )
    found = await reports.fortnight(periods.day_of(T, ZONE))
    assert [(n.id, n.unit, n.link) for n in found.notices] == [
        ("G1-promise-2", "gas", "/api/v1/requests/G1")
    ]


# ---- the API, in process ----------------------------------------------------------------------


def _services(apps: Any) -> Any:
    return apps.started[-1].app.state.components


async def _resolved_request(app: httpx.AsyncClient, services: Any, description: str) -> str:
    """A water request, resolved by its squad (the step committed as the squad's command
    would; no squad is online in process), recorded in the ledger."""
    created = await app.post(
        "/api/v1/requests",
        headers=auth("calltaker"),
        json={
            "caller_phone": "13800000000",
            "category": "water_main_burst",
            "description": description,
            "lat": XIGONG[0],
            "lon": XIGONG[1],
        },
    )
    assert created.status_code == 201, created.text
    request_id = str(created.json()["id"])
    record = await services.requests.read("water", request_id)
    step = transition(RequestView(State.ON_SCENE, "S1", "A1"), SquadStep("resolve", "A1", "fixed"))
    event = event_json("resolved", request_id, time.time(), Actor("squad", "S1"), note="fixed")
    await services.requests.commit("water", request_id, record.v, step, [event])

    async def recorded_resolved() -> bool:
        rows = await store.resolved_in(services.ledger.engine, periods.Span("", 0, 1e11))
        return any(r.id == request_id for r in rows)

    await eventually(recorded_resolved)
    return request_id


GETS = (
    "/api/v1/reports/evaluation?month=2026-03",
    "/api/v1/reports/evaluation.csv?month=2026-03",
    "/api/v1/reports/evaluation.svg?month=2026-03",
    "/api/v1/units/water/record",
    "/api/v1/spotchecks?week=2026-W10",
    "/api/v1/reports/spotchecks?week=2026-W10",
    "/api/v1/reports/spotchecks.svg?week=2026-W10",
    "/api/v1/reports/fortnight?from=2026-03-02",
)


async def test_roles_a_wall_or_a_calltaker_is_refused_and_a_desk_sees_its_own_unit(
    app: httpx.AsyncClient,
) -> None:
    for path in GETS:
        for role in ("wall", "calltaker"):
            answer = await app.get(path, headers=auth(role))
            assert answer.status_code == 403, (path, role)
        assert (await app.get(path)).status_code == 401, path
        assert (await app.get(path, headers=auth("center"))).status_code == 200, path
    for path in (
        "/api/v1/reports/evaluation/2026-01/close",
        "/api/v1/spotchecks/draw?week=2026-W10",
    ):
        assert (await app.post(path, headers=auth("wall"))).status_code == 403
    desk = await desk_auth(app, "water")
    own = await app.get("/api/v1/reports/evaluation?month=2026-03", headers=desk)
    assert own.status_code == 200 and [c["unit"] for c in own.json()["units"]] == ["water"]
    assert (await app.get("/api/v1/units/water/record", headers=desk)).status_code == 200
    assert (await app.get("/api/v1/units/power/record", headers=desk)).status_code == 403
    assert (await app.get("/api/v1/spotchecks?unit=power", headers=desk)).status_code == 403
    closing = await app.post("/api/v1/reports/evaluation/2026-01/close", headers=desk)
    assert closing.status_code == 403
    drawing = await app.post("/api/v1/spotchecks/draw?week=2026-W10", headers=desk)
    assert drawing.status_code == 403
    bad = await app.get("/api/v1/reports/evaluation?month=2026-13", headers=auth("center"))
    assert bad.status_code == 422 and "month" in bad.json()["error"]["fields"]
    bad = await app.get("/api/v1/reports/fortnight?from=yesterday", headers=auth("center"))
    assert bad.status_code == 422 and "from" in bad.json()["error"]["fields"]


async def test_odd_periods_and_check_ids_are_refused_and_nothing_is_recorded(
    app: httpx.AsyncClient,
) -> None:
    """Other scripts' digits and far years are refused with 422 naming the field (they were
    500s, and a month closed under "٢٠٢٦-١١" broke every later recompute); a spot check id
    that is no row id is a 404; a refused export is not in the audit."""
    center = auth("center")
    audited = len((await app.get("/api/v1/audit", headers=center)).json())
    for path, field in (
        ("/api/v1/reports/evaluation?month=%D9%A2%D9%A0%D9%A2%D9%A6-%D9%A1%D9%A1", "month"),
        ("/api/v1/reports/evaluation.csv?month=%D9%A2%D9%A0%D9%A2%D9%A6-%D9%A1%D9%A1", "month"),
        ("/api/v1/reports/evaluation?month=9999-12", "month"),
        ("/api/v1/reports/fortnight?from=9999-12-31", "from"),
        (
            "/api/v1/reports/fortnight.csv?from=%D9%A2%D9%A0%D9%A2%D9%A6-%D9%A1%D9%A1-%D9%A0%D9%A1",
            "from",
        ),
        ("/api/v1/reports/spotchecks?week=9999-W52", "week"),
    ):
        answer = await app.get(path, headers=center)
        assert answer.status_code == 422, (path, answer.text)
        assert field in answer.json()["error"]["fields"], path
    for month in ("%D9%A2%D9%A0%D9%A2%D9%A6-%D9%A1%D9%A1", "9999-12"):
        closing = await app.post(f"/api/v1/reports/evaluation/{month}/close", headers=center)
        assert closing.status_code == 422, closing.text
    drawn = await app.post("/api/v1/spotchecks/draw?week=9999-W52", headers=center)
    assert drawn.status_code == 422
    record = await app.get("/api/v1/units/water/record?recompute=true", headers=center)
    assert record.status_code == 200 and "٢" not in record.text
    for check in ("99999999999999999999999", "-1", "abc"):
        outcome = await app.post(
            f"/api/v1/spotchecks/{check}/outcome", headers=center, json={"outcome": "satisfied"}
        )
        assert outcome.status_code == 404, (check, outcome.text)
    assert len((await app.get("/api/v1/audit", headers=center)).json()) == audited


async def test_csv_by_accept_or_path_and_the_answer_matches_its_schema(
    app: httpx.AsyncClient,
) -> None:
    path = "/api/v1/reports/evaluation"
    by_path = await app.get(f"{path}.csv?month=2026-03", headers=auth("center"))
    by_accept = await app.get(
        f"{path}?month=2026-03", headers={**auth("center"), "Accept": "text/csv"}
    )
    for answer in (by_path, by_accept):
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
        rows = _parse_csv(answer.text)
        assert {r["unit"] for r in rows} == {u.code for u in CITY.units}
    as_json = await app.get(f"{path}?month=2026-03", headers=auth("center"))
    document = (await app.get("/api/v1/openapi.json", headers=auth("center"))).json()
    content = document["paths"][path]["get"]["responses"]["200"]["content"]
    assert "text/csv" in content
    schema = {**content["application/json"]["schema"], "components": document["components"]}
    jsonschema.Draft202012Validator(schema).validate(as_json.json())
    audit = (await app.get("/api/v1/audit?action=report_export", headers=auth("admin"))).json()
    assert len(audit) == 2 and audit[0]["by"].startswith("center")
    chart = await app.get(f"{path}.svg?month=2026-03&chart=trend&lang=en", headers=auth("center"))
    assert chart.headers["content-type"].startswith("image/svg+xml")
    ET.fromstring(chart.text)


async def test_a_not_fixed_callback_reopens_the_request_with_a_notice(apps: Any) -> None:
    app = await apps.start()
    services = _services(apps)
    broken = await _resolved_request(app, services, '=HYPERLINK("http://x") still leaking')
    fine = await _resolved_request(app, services, "fixed for good")
    week = periods.week_of(time.time(), CITY.zone)
    drawn = await app.post(f"/api/v1/spotchecks/draw?week={week}&size=5", headers=auth("center"))
    assert drawn.status_code == 201, drawn.text
    checks = {c["request_id"]: c for c in drawn.json()["checks"]}
    assert set(checks) == {broken, fine}
    desk = await desk_auth(app, "water")
    hidden = await app.get(f"/api/v1/spotchecks?week={week}", headers=desk)
    assert hidden.json() == []  # covert until the outcome is recorded

    outcome = f"/api/v1/spotchecks/{checks[broken]['id']}/outcome"
    answer = await app.post(
        outcome, headers=auth("center"), json={"outcome": "not_fixed", "note": "still leaking"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["reopened"] is True
    notice_id = answer.json()["notice"]
    assert notice_id == f"{broken}-recheck-1"
    detail = (await app.get(f"/api/v1/requests/{broken}", headers=auth("center"))).json()
    assert detail["state"] in ("queued", "offered")
    reopened = next(e for e in detail["timeline"] if e["type"] == "reopened")
    assert reopened["by"].startswith("center:")
    assert "still leaking" in reopened["note"]
    notices = await app.get(f"/api/v1/notices?request={broken}", headers=desk)
    assert [(n["id"], n["kind"], n["state"]) for n in notices.json()] == [
        (notice_id, "recheck", "open")
    ]
    again = await app.post(outcome, headers=auth("center"), json={"outcome": "satisfied"})
    assert again.status_code == 409

    satisfied = await app.post(
        f"/api/v1/spotchecks/{checks[fine]['id']}/outcome",
        headers=auth("center"),
        json={"outcome": "satisfied"},
    )
    assert satisfied.status_code == 200 and satisfied.json()["reopened"] is False
    detail = (await app.get(f"/api/v1/requests/{fine}", headers=auth("center"))).json()
    assert detail["state"] == "resolved" and detail["timeline"][-1]["type"] == "note"

    seen = await app.get(f"/api/v1/spotchecks?week={week}", headers=desk)
    assert {c["outcome"] for c in seen.json()} == {"not_fixed", "satisfied"}
    circular = (await app.get(f"/api/v1/reports/spotchecks?week={week}", headers=desk)).json()
    assert [(r["unit"], r["pass_rate"], r["rank"]) for r in circular["units"]] == [
        ("water", 0.5, 1)
    ]
    exported = await app.get(f"/api/v1/spotchecks.csv?week={week}", headers=auth("center"))
    rows = _parse_csv(exported.text)
    assert next(r for r in rows if r["request_id"] == broken)["description"].startswith("'=")
    missing = await app.post(
        "/api/v1/spotchecks/999999/outcome", headers=auth("center"), json={"outcome": "satisfied"}
    )
    assert missing.status_code == 404
    wrong = await app.post(outcome, headers=auth("center"), json={"outcome": "happy"})
    assert wrong.status_code == 422 and "outcome" in wrong.json()["error"]["fields"]


# ---- a unit desk's fortnight: its own requests only --------------------------------------------

BORDER = (34.70, 112.60)  # where two heating units' districts meet


def _shared_heating() -> list[Recorded]:
    """Heating outages of the two units that share the category (split by district): one
    repeat location at the border, heating's H1 first, then Yanshi's Y1 (50 m away) and Y2;
    heating's H2 elsewhere, resolved in time; Yanshi's Y3 elsewhere. The open ones missed
    their limits (heating: 1 of 2; Yanshi: 3 of 3)."""

    def heating(request_id: str, unit: str, offset: float, north_m: float, **row: Any) -> Recorded:
        steps = row.pop("steps", [("offered", 1, unit)])
        return recorded(
            request_id,
            unit,
            T + offset,
            row.pop("state", "offered"),
            steps,
            category="heating_outage",
            district="yanshi" if unit == "heating_yanshi" else "luolong",
            address=f"{request_id}'s caller, Border Road",
            lat=BORDER[0] + north_m / 111_320.0,
            lon=BORDER[1],
            **row,
        )

    on_time = [(kind, at, "heating") for kind, at in (("offered", 1), ("accepted", 100))]
    on_time += [("arrived", 1000, "heating"), ("resolved", 5000, "heating")]
    return [
        heating("H1", "heating", 3600, 0),
        heating("Y1", "heating_yanshi", 4200, 50),
        heating("Y2", "heating_yanshi", 4800, 0),
        heating("H2", "heating", 7200, -20_000, state="resolved", steps=on_time),
        heating("Y3", "heating_yanshi", 9000, 20_000),
    ]


def _numbers(value: Any) -> set[float]:
    """Every number in a decoded JSON answer."""
    if isinstance(value, dict):
        return set().union(*map(_numbers, value.values()))
    if isinstance(value, list):
        return set().union(*map(_numbers, value))
    return (
        {float(value)} if isinstance(value, int | float) and not isinstance(value, bool) else set()
    )


def test_a_desk_reads_the_fortnight_of_its_own_unit_only() -> None:
    requests = _shared_heating()
    rows = [row for row, _ in requests]
    disputed = [{**rows[0], "state": "disputed"}, {**rows[1], "state": "disputed"}]
    notices = [
        _notice("H1-accept-2", "heating", 1.0, None),
        _notice("Y1-accept-2", "heating_yanshi", 2.0, None),
    ]

    def report(unit: str | None) -> FortnightReport:
        return fortnight.report(
            period="p",
            start=T,
            end=T + 14 * 86_400,
            as_of=AS_OF,
            rows=rows,
            facts=[facts_of(row, ledger_events(events), AS_OF) for row, events in requests],
            disputed_rows=disputed,
            disputed_events={},
            open_items=[("heating", "H1"), ("heating_yanshi", "Y1")],
            notice_rows=notices,
            policy=Fortnight(),
            unit=unit,
        )

    everything = report(None)
    [repeat] = everything.repeats
    assert [i.id for i in repeat.requests] == ["H1", "Y1", "Y2"]
    assert (repeat.count, repeat.others, repeat.address) == (3, 0, "H1's caller, Border Road")
    shared = [(o.key, o.requests, o.missed) for o in everything.overdue_categories]
    assert shared == [("heating_outage", 5, 4)]

    mine = report("heating_yanshi")
    [repeat] = mine.repeats
    assert [i.id for i in repeat.requests] == ["Y1", "Y2"]
    assert (repeat.count, repeat.others) == (3, 1)
    # the place and times are its own requests', not the cluster's first (heating's H1)
    assert repeat.address == "Y1's caller, Border Road" and repeat.lat == rows[1]["lat"]
    assert (repeat.first_at, repeat.last_at) == (T + 4200, T + 4800)
    assert [(o.key, o.requests, o.missed, o.chronic) for o in mine.overdue_categories] == [
        ("heating_outage", 3, 3, True)
    ]
    assert [(o.key, o.overdue_now) for o in mine.overdue_units] == [("heating_yanshi", ["Y1"])]
    assert [d.id for d in mine.disputes] == ["Y1"]
    assert [n.id for n in mine.notices] == ["Y1-accept-2"]
    encoded = msgspec.json.encode(mine).decode()
    assert "H1" not in encoded and "H2" not in encoded
    assert not _numbers(msgspec.to_builtins(mine)) & {T + 3600, T + 7200}

    theirs = report("heating")
    [repeat] = theirs.repeats
    assert [i.id for i in repeat.requests] == ["H1"]
    assert (repeat.count, repeat.others, repeat.first_at) == (3, 2, T + 3600)
    assert [(o.key, o.requests, o.missed, o.chronic) for o in theirs.overdue_categories] == [
        ("heating_outage", 2, 1, False)
    ]
    assert "Y1" not in msgspec.json.encode(theirs).decode()
    assert report("water").repeats == []


async def test_a_desk_sees_none_of_another_units_requests_in_the_fortnight(apps: Any) -> None:
    app = await apps.start()
    await _record(_services(apps).ledger, _shared_heating())
    path = "/api/v1/reports/fortnight?from=2026-03-02"
    everything = (await app.get(path, headers=auth("center"))).json()
    [repeat] = everything["repeats"]
    assert [i["id"] for i in repeat["requests"]] == ["H1", "Y1", "Y2"]
    assert [(o["key"], o["requests"], o["missed"]) for o in everything["overdue_categories"]] == [
        ("heating_outage", 5, 4)
    ]
    as_csv = path.replace("fortnight?", "fortnight.csv?")
    center_csv = _parse_csv((await app.get(as_csv, headers=auth("center"))).text)
    assert next(r for r in center_csv if r["section"] == "repeat")["id"] == "H1 Y1 Y2"

    cases = (
        ("heating", ["H1"], ["Y1", "Y2", "Y3"], (2, 1)),
        ("heating_yanshi", ["Y1", "Y2"], ["H1", "H2"], (3, 3)),
    )
    for unit, own, foreign, (requests, missed) in cases:
        desk = await desk_auth(app, unit)
        answer = await app.get(path, headers=desk)
        assert answer.status_code == 200, answer.text
        found = answer.json()
        [repeat] = found["repeats"]
        assert [i["id"] for i in repeat["requests"]] == own
        assert (repeat["count"], repeat["others"]) == (3, 3 - len(own))
        assert [(o["key"], o["requests"], o["missed"]) for o in found["overdue_categories"]] == [
            ("heating_outage", requests, missed)
        ]
        assert [o["key"] for o in found["overdue_units"]] == [unit]
        exported = await app.get(as_csv, headers=desk)
        assert exported.status_code == 200
        rows = _parse_csv(exported.text)
        repeat_row = next(r for r in rows if r["section"] == "repeat")
        assert repeat_row["id"].split() == own
        assert repeat_row["detail"].endswith(f"{3 - len(own)} more of other units")
        foreign_times = {T + offset for offset in (3600, 4200, 4800, 7200, 9000)} - {
            i["received_at"] for i in repeat["requests"]
        }
        assert not _numbers(found) & foreign_times
        for ident in foreign:
            for text in (answer.text, exported.text):
                assert ident not in text, (unit, ident)
                assert f"{ident}'s caller" not in text
