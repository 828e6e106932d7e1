"""The simulated city: its pure models (arrivals, movement, people, report statistics) without
I/O, a short run against a real hub whose report must be complete and correct, and the
README's demo command as a process."""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatch_field.protocol import RequestInfo
from server.city import load_city
from server.reports.scorecard import Spread, spread, verdict
from server.store.embedded import free_port
from simulations.api import HubApi
from simulations.arrivals import (
    HOUR_PROFILE,
    ArrivalProcess,
    category_weights,
    hour_weight,
    plan_request,
    sample_point,
)
from simulations.center_desk import Call, find_duplicate, ruling_for
from simulations.city import SimConfig, Simulation, hub_time_settings, register_squads, seat_plan
from simulations.clock import SimClock
from simulations.movement import Trip, distance_m, kmh_to_mps, offset_m, street_route
from simulations.people import Behaviour, plan_job
from simulations.report import collect_and_write, fmt_duration, write_report
from simulations.run import SimRun
from simulations.squad import Seat
from simulations.stats import outcome_of, state_from_timeline, summarize
from tests.conftest import ROOT, TOKENS

CITY = load_city()
XIGONG = (34.670, 112.445)


# ---- arrivals --------------------------------------------------------------------------------


def test_arrivals_follow_the_hour_profile_on_average() -> None:
    days, rate = 60, 40.0
    process = ArrivalProcess(rate, lambda t: (t / 3600) % 24, random.Random(3))
    by_hour: Counter[int] = Counter()
    t = 0.0
    while (t := process.next_after(t)) < days * 86400:
        by_hour[int(t / 3600) % 24] += 1
    total = sum(by_hour.values())
    expected_total = rate * 24 * days
    assert abs(total - expected_total) < 4 * math.sqrt(expected_total)
    for hour in range(24):
        expected = rate * days * hour_weight(hour)
        assert abs(by_hour[hour] - expected) < 5 * math.sqrt(expected) + 5, hour
    busiest = max(range(24), key=lambda h: by_hour[h])
    assert HOUR_PROFILE[busiest] >= 0.9 * max(HOUR_PROFILE)  # a peak hour, not the night


def test_arrivals_repeat_with_the_same_seed() -> None:
    def first_ten(seed: int) -> list[float]:
        process = ArrivalProcess(30.0, lambda t: 8.0, random.Random(seed))
        times, t = [], 0.0
        for _ in range(10):
            t = process.next_after(t)
            times.append(t)
        return times

    assert first_ten(5) == first_ten(5)
    assert first_ten(5) != first_ten(6)
    assert first_ten(5) == sorted(first_ten(5))


def test_sampled_points_lie_inside_their_district() -> None:
    rng = random.Random(1)
    for district in CITY.districts:
        for _ in range(300):
            lat, lon = sample_point(rng, district)
            assert district.contains(lat, lon), (district.code, lat, lon)


def test_planned_requests_are_valid_and_mostly_common_categories() -> None:
    rng = random.Random(2)
    planned = [plan_request(rng, CITY, ("xigong", "luolong")) for _ in range(2000)]
    for p in planned:
        assert p.district in ("xigong", "luolong")
        assert CITY.district_at(p.lat, p.lon).code == p.district  # type: ignore[union-attr]
        assert CITY.category(p.category) is not None
        assert p.description and p.caller_phone.isdigit() and len(p.caller_phone) == 11
    counts = Counter(p.category for p in planned)
    weights = category_weights(CITY)
    assert counts["water_outage"] > counts["gas_leak_smell"] * 5
    assert set(counts) <= set(weights)


# ---- movement --------------------------------------------------------------------------------


def test_street_route_is_an_l_between_straight_and_root_two() -> None:
    rng = random.Random(4)
    start = XIGONG
    for _ in range(50):
        end = offset_m(start, rng.uniform(-8000, 8000), rng.uniform(-8000, 8000))
        route = street_route(start, end, rng)
        assert route[0] == start and route[-1] == end and len(route) == 3
        corner = route[1]
        assert corner in ((end[0], start[1]), (start[0], end[1]))
        length = sum(distance_m(a, b) for a, b in zip(route, route[1:], strict=False))
        straight = distance_m(start, end)
        # Parallels shrink northwards, so an L in lat/lon can be a hair over root two.
        assert straight - 1 <= length <= straight * math.sqrt(2) * 1.01
    assert len(street_route(start, offset_m(start, 100, 100), rng)) == 2  # last block: straight


def test_trip_moves_at_its_speed_and_ends_at_the_destination() -> None:
    end = offset_m(XIGONG, 3000, 4000)
    trip = Trip((XIGONG, (end[0], XIGONG[1]), end), kmh_to_mps(30), start_t=100.0)
    assert trip.length_m == pytest.approx(7000, rel=0.01)
    assert trip.duration_s == pytest.approx(7000 / (30 / 3.6), rel=0.01)  # 14 minutes
    assert trip.position_at(0) == XIGONG and trip.position_at(trip.end_t + 5) == end
    halfway = trip.position_at(100 + trip.duration_s / 2)
    # 3.5 km along: the whole 3 km north leg, then 500 m east
    assert distance_m(halfway, offset_m(XIGONG, 3000, 500)) < 20
    before = trip.time_at_remaining(300)
    assert distance_m(trip.position_at(before), end) == pytest.approx(300, rel=0.02)
    assert Trip.staying(XIGONG, 0).position_at(1e6) == XIGONG


def test_squads_park_around_their_depots() -> None:
    plan = seat_plan(CITY, 2)
    homes = [home for _, _, home, _ in plan]
    assert len(set(homes)) == len(homes)  # nobody on another squad's spot
    for unit, district, home, _ in plan:
        depots = CITY.district(district).depots  # type: ignore[union-attr]
        assert min(distance_m(home, d) for d in depots) < 1500, (unit, district)
    units = {u for u, _, _, _ in plan}
    assert units == {u.code for u in CITY.units}


# ---- people ----------------------------------------------------------------------------------


def test_job_plans_follow_the_behaviour_shares() -> None:
    rng = random.Random(9)
    category = CITY.category("water_main_burst")
    assert category is not None
    behaviour = Behaviour(slow_share=0.2, dispute_share=0.1, defer_share=0.2)
    plans = [plan_job(rng, category, "water", behaviour, offer_window_s=60) for _ in range(4000)]
    late = sum(p.accept_delay_s > 60 for p in plans) / len(plans)
    assert 0.19 < late < 0.26  # the slow share plus a thin natural tail
    assert 0.08 < sum(p.dispute_after_s is not None for p in plans) / len(plans) < 0.12
    deferred = [p.deferral for p in plans if p.deferral is not None]
    assert 0.15 < len(deferred) / len(plans) < 0.21  # defer_share of the undisputed
    assert all(d.promise_s > 0 and d.finish_s > 0 for d in deferred)
    assert 0.1 < sum(not d.kept for d in deferred) / len(deferred) < 0.3
    assert all(15 <= p.speed_kmh <= 50 for p in plans)
    median_work = sorted(p.work_s for p in plans)[len(plans) // 2]
    assert median_work == pytest.approx(category.work_s, rel=0.1)


def test_calm_people_never_dispute_defer_or_lose_signal() -> None:
    rng = random.Random(10)
    category = CITY.category("streetlight_out")
    assert category is not None
    calm = Behaviour(slow_share=0, signal_loss_share=0, dispute_share=0, defer_share=0)
    for _ in range(500):
        plan = plan_job(rng, category, "municipal", calm, offer_window_s=60)
        assert plan.signal_loss is None and plan.deferral is None
        assert plan.dispute_after_s is None


def test_clock_compresses_time_by_the_speed() -> None:
    now = [1000.0]
    clock = SimClock(20, start_hour=23.5, real_now=lambda: now[0])
    now[0] += 90  # 90 real seconds = 30 simulated minutes
    assert clock.now() == pytest.approx(1800)
    assert clock.hour_at(clock.now()) == pytest.approx(0.0)
    assert clock.label() == "00:00 +1d"
    assert clock.real_at(1800) == pytest.approx(1090)
    assert hub_time_settings(20) == {"DISPATCH_OFFER_WINDOW_S": "3", "DISPATCH_TIME_SCALE": "0.05"}


# ---- report statistics -----------------------------------------------------------------------


def _detail(
    events: Sequence[tuple[str, float]],
    state: str,
    category: str = "water_main_burst",
    speed: float = 1.0,
    **extra: Any,
) -> dict[str, Any]:
    """A request as the hub answers it, its deadlines set from its category's limits on the
    time scale of a run at ``speed`` (as the hub does with DISPATCH_TIME_SCALE = 1/speed)."""
    limits = CITY.category(category)
    assert limits is not None
    return {
        "id": "R1",
        "category": category,
        "unit": "water",
        "district": "xigong",
        "route": "linkage",
        "state": state,
        "received_at": 1000.0,
        "deadlines": {
            f"{name}_by": 1000.0 + getattr(limits.limits, f"{name}_s") / speed
            for name in ("accept", "arrive", "resolve")
        },
        "timeline": [{"type": kind, "at": 1000.0 + at, "by": "squad:S1"} for kind, at in events],
        **extra,
    }


def test_outcome_converts_real_durations_to_simulated_and_judges_limits() -> None:
    # water_main_burst: accept 300 s, arrive 1800 s, resolve 14400 s (simulated)
    events = [
        ("received", 0),
        ("queued", 0),
        ("offered", 0.1),
        ("accepted", 2.0),
        ("en_route", 3.0),
        ("arrived", 100.0),
        ("resolved", 400.0),
    ]
    outcome = outcome_of(_detail(events, "resolved", speed=10), speed=10, now=2000)
    assert outcome.took == {"accept": 20.0, "arrive": 1000.0, "resolve": 4000.0}
    assert outcome.verdicts == {"accept": "met", "arrive": "met", "resolve": "met"}
    assert outcome.consistent and outcome.final

    slow = [
        ("received", 0),
        ("queued", 0),
        ("offered", 0.1),
        ("offer_expired", 6),
        ("queued", 6),
        ("offered", 6),
        ("accepted", 40),
    ]
    late = outcome_of(_detail(slow, "accepted", speed=10), speed=10, now=1000 + 100)
    assert late.verdicts == {"accept": "missed", "arrive": "pending", "resolve": "pending"}
    assert late.non_responses == 1 and late.offers == 2
    assert not late.final


def test_open_request_misses_a_limit_once_it_has_passed() -> None:
    assert verdict(None, deadline=300, closed=100, cancelled_at=None) == "pending"
    assert verdict(None, deadline=300, closed=301, cancelled_at=None) == "missed"
    assert verdict(300, deadline=300, closed=10_000, cancelled_at=None) == "met"
    assert verdict(None, deadline=300, closed=200, cancelled_at=200) == "void"


def test_state_from_timeline_and_promises() -> None:
    events = [
        ("received", 0),
        ("queued", 0),
        ("offered", 0),
        ("accepted", 1),
        ("arrived", 2),
        ("deferred", 3),
        ("resolved", 50),
    ]
    assert state_from_timeline([{"type": k} for k, _ in events]) == "resolved"

    def promising(until: float) -> dict[str, Any]:
        detail = _detail(events, "resolved", promised_by=until)
        detail["timeline"][5]["until"] = until  # the deferred event names the promised time
        return detail

    kept = outcome_of(promising(1060.0), 1, 2000)
    broken = outcome_of(promising(1040.0), 1, 2000)
    assert kept.promise_kept is True and broken.promise_kept is False
    disputed = [("received", 0), ("queued", 0), ("offered", 0), ("disputed", 1)]
    assert state_from_timeline([{"type": k} for k, _ in disputed]) == "disputed"


def test_summary_counts_add_up() -> None:
    details = [
        _detail([("received", 0), ("queued", 0)], "queued"),
        _detail([("received", 0), ("queued", 0), ("offered", 0), ("accepted", 1)], "accepted"),
        _detail(
            [("received", 0), ("transferred", 0)],
            "transferred",
            category="police",
            route="police",
            unit=None,
        ),
        _detail([("received", 0), ("queued", 0)], "offered"),  # disagrees with its timeline
    ]
    outcomes = [outcome_of(d, 5, 1100) for d in details]
    summary = summarize(outcomes, CITY)
    assert summary["requests"] == 4 and summary["linkage"] == 3
    assert sum(summary["by_state"].values()) == 4
    for counts in summary["limits"].values():
        assert sum(counts.values()) == 3
    assert summary["per_unit"][0]["requests"] == 3
    assert summary["inconsistent"] == ["R1"]
    assert spread([]) == Spread(0, None, None, None)
    assert spread(range(11)) == Spread(11, 5, 9, 10)
    assert fmt_duration(30) == "30 s" and fmt_duration(600) == "10.0 min"


def test_notices_rulings_and_cancellations_are_counted_by_unit_kind_and_level() -> None:
    late = [
        {"type": "received", "at": 1000.0},
        {"type": "queued", "at": 1000.0},
        {"type": "notice_issued", "at": 1300.0, "notice_kind": "waiting", "level": 1},
        {"type": "notice_issued", "at": 1400.0, "notice_kind": "waiting", "level": 2},
        {"type": "disputed", "at": 1500.0},
        {"type": "reassigned", "at": 1600.0},
        {"type": "notice_issued", "at": 1700.0, "notice_kind": "resolve", "level": 1},
    ]
    gas = _detail([], "queued", unit="gas") | {
        "id": "R2",
        "timeline": [
            {"type": "received", "at": 1000.0},
            {"type": "notice_issued", "at": 1100.0, "notice_kind": "accept", "level": 1},
            {"type": "cancelled", "at": 1200.0, "reason": "duplicate"},
        ],
    }
    outcomes = [
        outcome_of(_detail([], "queued") | {"timeline": late}, 1, 2000),
        outcome_of(gas, 1, 2000),
    ]
    assert outcomes[0].notices == (("waiting", 1), ("waiting", 2), ("resolve", 1))
    assert outcomes[0].ruling == "reassigned" and outcomes[1].cancelled == "duplicate"
    summary = summarize(outcomes, CITY)
    assert summary["notices"] == {
        "total": 4,
        "by_unit": {"gas": 1, "water": 3},
        "by_kind": {"accept": 1, "resolve": 1, "waiting": 2},
        "by_level": {"1": 3, "2": 1},
    }
    assert summary["rulings"] == {"reassigned": 1}
    assert summary["cancelled"] == {"duplicate": 1}
    by_unit = {row["unit"]: row["notices"]["total"] for row in summary["per_unit"]}
    assert by_unit == {"gas": 1, "water": 3}


def test_the_center_desk_rules_within_the_city_and_spots_repeat_calls() -> None:
    rng = random.Random(7)
    dispute = {
        "id": "20261130-001001",
        "unit": "water",
        "district": "xigong",
        "category": "water_main_burst",
    }
    decisions = [ruling_for(dispute, CITY, rng) for _ in range(200)]
    assert {d.decision for d in decisions} == {"uphold", "reassign"}
    for ruling in decisions:
        if ruling.decision == "reassign":
            responsible = CITY.unit_for(ruling.category, "xigong")
            assert responsible is not None and responsible.code == ruling.unit != "water"
            assert set(ruling.body()) == {"decision", "unit", "category", "note"}
        else:
            assert set(ruling.body()) == {"decision", "note"}
    first = Call("A", "water_main_burst", 34.67, 112.44, 100.0)
    near = Call("B", "water_main_burst", 34.6715, 112.44, 700.0)  # ~170 m, 10 min later
    far = Call("C", "water_main_burst", 34.68, 112.44, 700.0)  # ~1.1 km
    other = Call("D", "road_collapse", 34.67, 112.44, 700.0)
    late = Call("E", "water_main_burst", 34.67, 112.44, 100.0 + 3600)
    assert find_duplicate(near, [first]) == first
    assert find_duplicate(far, [first]) is None
    assert find_duplicate(other, [first]) is None
    assert find_duplicate(late, [first]) is None


# ---- a short run against a real hub ----------------------------------------------------------


def _once(request: pytest.FixtureRequest) -> None:
    """The run needs one Redis, not each: skip all but the embedded one."""
    param = request.node.callspec.params.get("redis_base_url")
    if param != "redis6.2-embedded":
        pytest.skip("the simulation runs once, on the embedded Redis")


@pytest.mark.filterwarnings("error::UserWarning")  # matplotlib: a legend of no line
def test_a_run_stopped_before_its_first_call_still_writes_its_report(tmp_path: Path) -> None:
    """Ctrl-C right after the banner: no request made. The report says so (zeros, no
    times) instead of failing on the empty city-wide figures, as it once did."""
    run = SimRun(speed=5, rate_per_hour=60, seed=1, start_hour=9.0, started_at=1.0, ended_at=2.0)
    files = write_report(run, [], CITY, tmp_path / "report", now=2.0)
    summary = json.loads(files.summary.read_text())["summary"]
    assert summary["requests"] == 0
    assert all(sum(counts.values()) == 0 for counts in summary["limits"].values())
    assert all(times["count"] == 0 for times in summary["times_s"].values())
    page = files.html.read_text(encoding="utf-8")
    assert "met 达标" in page and "</html>" in page


async def test_short_run_writes_a_complete_and_correct_report(
    hubs: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    _once(request)
    speed = 60.0
    settings = {k.removeprefix("DISPATCH_").lower(): v for k, v in hub_time_settings(speed).items()}
    hub = hubs.start(**settings, timer_poll_ms=50, queue_sweep_s=0.5)
    api = HubApi(hub.http, TOKENS)
    districts = ("xigong", "laocheng", "jianxi")
    try:
        seats = await register_squads(api, CITY, 1, districts)
        config = SimConfig(
            speed=speed,
            rate_per_hour=80,
            duration_s=25,
            seed=7,
            start_hour=9.0,
            districts=districts,
            behaviour=Behaviour(
                slow_share=0.15,
                signal_loss_share=0.25,
                dispute_share=0.08,
                defer_share=0.15,
                work_scale=0.05,
            ),
        )
        run = await Simulation(api, CITY, seats, config, progress=None).run()
        files = await collect_and_write(api, CITY, run, tmp_path / "report")
    finally:
        await api.close()

    made = {r.id: r for r in run.requests}
    assert len(made) >= 15 and run.refused == 0
    assert run.tally.errors == 0
    document = json.loads(files.summary.read_text())
    summary = document["summary"]
    assert document["run"]["requests_made"] == len(made)
    assert summary["requests"] == len(made) and summary["missing"] == []
    assert summary["inconsistent"] == []
    assert sum(summary["by_state"].values()) == len(made)
    assert summary["linkage"] + summary["transferred"] == len(made)
    for counts in summary["limits"].values():
        assert sum(counts.values()) == summary["linkage"]
    assert sum(row["requests"] for row in summary["per_unit"]) == summary["linkage"]
    assert summary["resolved"] > 0 and summary["offers"] >= summary["linkage"] - (
        summary["by_state"].get("queued", 0)
    )

    records = json.loads(files.requests.read_text())
    assert {r["id"] for r in records} == set(made)
    for record in records:
        _check_record(record, made[record["id"]].route)

    page = files.html.read_text(encoding="utf-8")
    assert 'id="per-unit"' in page
    for row in summary["per_unit"]:
        assert f"<td>{row['unit']}</td>" in page
    assert page.count("data:image/png;base64,") == len(files.images) == 4
    assert "http://" not in page and "https://" not in page  # opens offline
    for image in files.images:
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _check_record(record: dict[str, Any], route: str) -> None:
    """A request's state agrees with its timeline, and its times with its state."""
    assert record["consistent"], record
    took, state = record["took_s"], record["state"]
    if route != "linkage":
        assert state == "transferred" and record["limits"] is None
        return
    assert set(record["limits"].values()) <= {"met", "missed", "pending", "void"}
    if state == "resolved":
        assert took["resolve"] is not None
    if state in ("on_scene", "resolved") and not record["deferred"]:
        assert took["arrive"] is not None
    if state in ("queued", "offered") and record["non_responses"] == 0:
        assert took["accept"] is None
    steps = [took[k] for k in ("accept", "arrive", "resolve") if took[k] is not None]
    assert steps == sorted(steps)
    category = CITY.category(record["category"])
    assert category is not None
    for name, value in took.items():
        if name == "resolve" and record["deferred"]:
            continue  # a promise moved the resolution deadline
        limit = getattr(category.limits, f"{name}_s")
        if value is not None and abs(value - limit) > 0.1:  # times are rounded to 0.1 s
            assert (record["limits"][name] == "met") == (value <= limit)


# ---- the README's run command ----------------------------------------------------------------


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _run_demo(
    port: int, data_dir: Path, seconds: float, during: Callable[[], None] | None = None
) -> str:
    """Run the README's demo for ``seconds`` (``during`` is called once its state file is
    written, while it runs), then Ctrl-C; its console output."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulations.demo",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--speed",
            "20",
            "--no-report",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    started = time.monotonic()
    try:
        if during is not None:
            state = data_dir / "demo.json"
            while not (state.exists() and "accounts" in state.read_text()):
                assert process.poll() is None and time.monotonic() - started < 60, "no demo.json"
                time.sleep(0.1)
            during()
    except BaseException:  # a failed check must not leave the demo (hub, Redis) running
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    time.sleep(max(0.0, seconds - (time.monotonic() - started)))
    process.send_signal(signal.SIGINT)  # Ctrl-C: the demo shuts everything down itself
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        logs = "".join(
            f"\n--- {name} (last 4,000 characters) ---\n"
            + (data_dir / name).read_text(errors="replace")[-4000:]
            for name in ("hub.log", "ledger.log")
            if (data_dir / name).exists()
        )
        pytest.fail(f"the demo did not stop in 30 s:\n{output.decode(errors='replace')}{logs}")
    assert process.returncode == 0, output.decode(errors="replace")
    assert "city stopped" in output.decode() and "Redis stopped" in output.decode()
    return output.decode()


class _CallsOnly:
    """A hub API that only takes calls: the citizens' side of a run with no squads (a fake
    transport; the city runs against a real hub in the tests below)."""

    ws_url = "ws://unused"

    def __init__(self) -> None:
        self.made = 0

    async def create_request(self, planned: Any) -> dict[str, Any]:
        self.made += 1
        return {"id": f"R{self.made}", "route": "linkage", "unit": "water"}

    async def live_map(self) -> dict[str, Any]:
        return {"requests": [], "squads": []}


async def test_a_stop_does_not_wait_for_calls_planned_for_later() -> None:
    """Every call here is repeated by another caller 120-900 simulated seconds later, which
    at 20x is 6-45 real seconds away: the stop cancels the repeats not made yet, returns at
    once, and every call made is in the run's record. (The demo's Ctrl-C once waited for
    them, past the 30 s its test allows.)"""
    api = _CallsOnly()
    config = SimConfig(
        speed=20,
        rate_per_hour=3_600,
        warm_start=0,
        duplicate_share=1.0,
        center_desk=False,
        seed=7,
        start_hour=8.0,
    )
    simulation = Simulation(api, CITY, [], config, progress=None)  # type: ignore[arg-type]
    stop = asyncio.Event()
    run = asyncio.create_task(simulation.run(stop))
    for _ in range(200):  # the first call (its repeat is planned as it is placed)
        if api.made:
            break
        await asyncio.sleep(0.01)
    assert api.made
    stop.set()
    done, _ = await asyncio.wait({run}, timeout=3)
    assert done, "the run waited for the calls planned for later"
    assert len(run.result().requests) == api.made


class _HeldJob:
    """What the hub tells a squad resuming after a restart of the demo: the request of a job
    it already held (a fake transport; the demo test restarts against a real hub)."""

    ws_url = "ws://unused"

    async def get_request(self, request_id: str) -> dict[str, Any]:
        return {"id": request_id, "category": "water_outage", "lat": 34.67, "lon": 112.44}

    async def live_map(self) -> dict[str, Any]:
        return {"requests": [], "squads": []}


def _info(request_id: str) -> RequestInfo:
    return RequestInfo(
        id=request_id, category="water_outage", description="", lat=34.67, lon=112.44
    )


async def test_jobs_held_from_before_a_restart_are_carried_over_not_offered() -> None:
    """A restarted demo's squads resume the jobs they held. Those requests were neither made
    nor offered in this run: the progress line once counted them as offered, so "offered"
    could exceed "made"."""
    seat = Seat("S-1", "token", "water", "xigong", XIGONG)
    config = SimConfig(speed=20, rate_per_hour=60, seed=7, start_hour=8.0, center_desk=False)
    progress = io.StringIO()
    api = _HeldJob()
    simulation = Simulation(api, CITY, [seat], config, progress=progress, resume=True)  # type: ignore[arg-type]
    agent = simulation.agents[0]
    try:
        await agent._resume_job({"id": "A-old", "request": "R-old", "state": "accepted"})
        agent._on_offer("A-new", _info("R-new"), "offered")  # a new job of this run
        agent._on_offer("A-old", _info("R-old"), "accepted")  # replayed by the hub: known
        tally = simulation.run_info.tally
        assert tally.carried_over == {"R-old"} and tally.offered_requests == {"R-new"}
        assert tally.offers == 1
        simulation._show(await simulation._sample(), last_print=-math.inf)
        assert "0 made (+1 carried over), 1 offered" in progress.getvalue()
    finally:
        await agent.stop()


@pytest.mark.system
def test_demo_serves_a_live_city_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    signed_in: dict[str, str] = {}
    made_by: list[str] = []

    def sign_in_to_every_face() -> None:
        accounts = json.loads((tmp_path / "demo.json").read_text())["accounts"]
        for account in accounts:
            answer = httpx.post(
                f"http://127.0.0.1:{port}/api/v1/session",
                json={"username": account["username"], "password": account["password"]},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            signed_in[account["username"]] = answer.json()["role"]
        # The simulated call-takers act as an account of their own, which the request's
        # timeline names (not the start-up token's "bootstrap-calltaker").
        simulated = json.loads((tmp_path / "demo.json").read_text())["simulated"]
        center = {"Authorization": f"Bearer {simulated['center']['token']}"}
        deadline = time.monotonic() + 20
        items: list[dict[str, Any]] = []
        while not items and time.monotonic() < deadline:
            queue = httpx.get(f"http://127.0.0.1:{port}/api/v1/center/queue", headers=center)
            items = queue.json()["items"]
            time.sleep(0.2)
        assert items, "no request made in 20 s"
        made = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/requests/{items[0]['id']}", headers=center
        )
        received = made.json()["timeline"][0]
        assert received["type"] == "received", received
        made_by.append(received["by"])

    first = _run_demo(port, tmp_path, 8, sign_in_to_every_face)
    state = json.loads((tmp_path / "demo.json").read_text())
    # A sign-in for every face, each with its role; the passwords only in the user's file
    # (never on the console, no token in any URL).
    assert signed_in == {
        "wall": "wall",
        "center": "center",
        "calltaker": "calltaker",
        "water-desk": "unit",
    }
    assert "/wall.html" in first and "/intake.html" in first and "token=" not in first
    assert made_by == [f"calltaker:{state['simulated']['calltaker']['username']}"]
    assert state["simulated"]["calltaker"]["username"] == "sim-calltaker"
    assert state["simulated"]["center"]["token"] not in first
    assert all(a["username"] in first and a["password"] not in first for a in state["accounts"])
    assert (tmp_path / "demo.json").stat().st_mode & 0o777 == 0o600
    online = re.search(r"squads (\d+)/(\d+) online", first)
    assert online and online.group(1) == online.group(2) == str(len(state["squads"]))
    assert "requests" in first and not _port_open(port)
    # A restart on the same data keeps the tokens and the squads (they resume their jobs).
    second = _run_demo(port, tmp_path, 6)
    again = json.loads((tmp_path / "demo.json").read_text())
    assert again == state
    assert "Traceback" not in first + second
