"""The load test: a short real run (one hub, then two) gives a complete, correct report; and
the pure pieces it is built from (statistics, WebSocket codec, squad behaviour, plan).

The runs start their own embedded Redis and hubs, so they do not take ``redis_url`` and run
once per session whatever the Redis parametrization.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dispatch_field import protocol
from server.city import load_city
from tools.loadtest import rolling as rr
from tools.loadtest import stats as st
from tools.loadtest import ws
from tools.loadtest.http_client import HttpError, HttpPool, parse_head, request_bytes
from tools.loadtest.plan import plan_requests, plan_squads, unit_counts
from tools.loadtest.profiles import parse
from tools.loadtest.run import parse_args
from tools.loadtest.squad import SquadAgent, Tally

ROOT = Path(__file__).resolve().parents[1]
SQUADS, RATE, DURATION = 50, 5, 5
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "squads_connected": int,
    "positions_per_s": float,
    "dispatch_ms": dict,
    "ack_ms": dict,
    "requests": int,
    "frames_lost": int,
    "over_capacity": int,
    "hubs": int,
    "hub_cpu_percent": list,
    "hub_rss_mb": list,
}


# ---- a short real run ------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[1, 2], ids=["1hub", "2hubs"])
def report(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("loadtest") / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.loadtest",
            "--squads",
            str(SQUADS),
            "--rate",
            str(RATE),
            "--duration",
            str(DURATION),
            "--hubs",
            str(request.param),
            "--baseline",
            "1",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(out.read_text())
    result["_hubs_asked"] = request.param
    return result


@pytest.mark.system
def test_report_has_every_key_typed(report: dict[str, Any]) -> None:
    for key, kind in REQUIRED.items():
        assert isinstance(report[key], kind), (key, report[key])
    assert set(report["dispatch_ms"]) == {"p50", "p95", "p99"}
    assert set(report["ack_ms"]) == {"p50", "p99"}
    for value in [*report["dispatch_ms"].values(), *report["ack_ms"].values()]:
        assert isinstance(value, float) and value > 0
    assert report["hubs"] == report["_hubs_asked"]
    assert len(report["hub_cpu_percent"]) == len(report["hub_rss_mb"]) == report["hubs"]
    assert all(isinstance(v, float) and v >= 0 for v in report["hub_cpu_percent"])
    assert all(isinstance(v, float) and v > 0 for v in report["hub_rss_mb"])


@pytest.mark.system
def test_report_is_correct(report: dict[str, Any]) -> None:
    assert report["squads_connected"] == SQUADS
    assert sum(report["hub_sessions"]) == SQUADS
    assert report["requests"] == report["requests_sent"] == RATE * DURATION
    assert report["frames_lost"] == 0
    assert report["over_capacity"] == 0
    assert report["free_negative"] == 0
    assert report["offers_received"] == report["offers_made"] == report["offers_expected"]
    assert report["dispatch_samples"] + report["requests_queued_at_intake"] == report["requests"]
    assert report["ack_samples"] == report["offers_received"]
    assert report["command_errors"] == {}
    dispatch, ack = report["dispatch_ms"], report["ack_ms"]
    assert dispatch["p50"] <= dispatch["p95"] <= dispatch["p99"]
    # The hub's own reading counts from the intake's arrival, the client's from its send.
    hub = report["hub_dispatch_ms"]
    assert 0 < hub["p50"] <= hub["p95"] <= hub["p99"]
    late = report["tick_late_ms"]  # the position ticks' lateness: the load's evenness
    assert late["p50"] <= late["p95"] <= late["p99"] <= late["max"]
    assert ack["p50"] <= ack["p99"]
    # Positions: ingested at about the rate sent (one per squad per second), read back fresh.
    assert report["positions_per_s"] > 0.5 * SQUADS
    assert report["positions_api_fresh"] == 1.0
    # --baseline: the hubs' CPU without requests, and what each lifecycle added to it.
    idle, busy = report["hub_idle_cpu_percent"], report["hub_cpu_percent"]
    assert len(idle) == report["hubs"] and all(v >= 0 for v in idle)
    lifecycle = report["hub_cpu_ms_per_lifecycle"]
    # 25 lifecycles add about as much CPU as one 10 ms tick of noise in the baseline: the
    # figure may come out 0 (never below). It is what the hubs' two readings say.
    expected = max(0.0, sum(busy) - sum(idle)) / 100 * DURATION / report["requests"] * 1000
    assert lifecycle >= 0
    assert lifecycle == pytest.approx(expected, rel=0.2, abs=0.1)  # the window is a bit longer


def _run_loadtest(
    out: Path, *args: str, squads: int = SQUADS, duration: float = 3, timeout_s: float = 150
) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.loadtest",
            "--squads",
            str(squads),
            "--rate",
            str(RATE),
            "--duration",
            str(duration),
            "--drain",
            "5",
            "--out",
            str(out),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


@pytest.mark.system
def test_storm_and_floor_report_their_keys(tmp_path: Path) -> None:
    """One short run with both modes: the storm brings every squad back with every frame it
    held, and the bare dispatch is measured with the same client and compared."""
    report = _run_loadtest(tmp_path / "report.json", "--storm", "--floor")
    storm = report["storm"]
    assert storm["squads"] == storm["back"] == SQUADS and storm["failed"] == 0
    held = RATE * 3
    assert storm["frames_held"] == storm["frames_replayed"] == held  # one offer per request
    assert storm["frames_missing"] == 0
    assert storm["all_back_s"] > 0 and storm["resumes_per_s"] > 0
    assert set(storm["back_s"]) == {"p50", "p99"}
    # What each kind of process spent on the storm (50 squads: a few clock ticks, maybe 0).
    cpu = storm["cpu_percent"]
    assert set(cpu) == {"hubs", "redis", "clients", "driver", "machine"}
    assert len(cpu["hubs"]) == 1 and min(cpu["hubs"][0], cpu["clients"], cpu["redis"]) >= 0
    assert storm["cpu_wall_s"] > 0
    assert report["ack_ms"] == {"p50": None, "p99": None}  # holding squads answer nothing
    floor = report["floor"]
    assert floor["squads_connected"] == SQUADS and floor["frames_lost"] == 0
    assert floor["requests"] == held and floor["requests_failed"] == 0
    assert set(floor["dispatch_ms"]) == {"p50", "p95", "p99"}
    assert floor["cpu_percent"] >= 0 and floor["cpu_us_per_position"] > 0
    versus = report["vs_floor"]
    for q in ("p50", "p99"):
        ratio = versus[f"dispatch_{q}_ratio"]
        assert ratio == pytest.approx(report["dispatch_ms"][q] / floor["dispatch_ms"][q], abs=0.01)


@pytest.mark.system
def test_the_independent_node_probe_plays_the_same_workload(tmp_path: Path) -> None:
    """``--client node``: the probe (tools/probe/probe.mjs, its own WebSocket, HTTP and
    MessagePack code), its squads and requests shared out over two threads, connects every
    squad, and each request is offered (to a squad of either thread) and walked to its end.
    Needs Node.js and ``npm ci`` (the ``@msgpack/msgpack`` package)."""
    if shutil.which("node") is None or not (ROOT / "node_modules/@msgpack/msgpack").is_dir():
        pytest.skip("the Node probe needs node and `npm ci` (node_modules/@msgpack/msgpack)")
    report = _run_loadtest(tmp_path / "report.json", "--client", "node", "--clients", "2")
    assert report["client"] == "node" and report["workers"] == 2
    assert report["squads_connected"] == SQUADS
    assert report["requests"] == RATE * 3 and report["requests_failed"] == 0
    assert report["frames_lost"] == 0 and report["command_errors"] == {}
    assert report["positions_sent_per_s"] > 0.5 * SQUADS
    assert report["dispatch_ms"]["p50"] > 0 and report["step_ms"]["p50"] > 0
    assert report["hub_dispatch_ms"]["p50"] > 0  # the hub's own reading of the same
    assert report["tick_late_ms"]["p99"] <= report["tick_late_ms"]["max"]


@pytest.mark.system
def test_a_rolling_restart_of_two_hubs_under_load_loses_nothing(tmp_path: Path) -> None:
    """Each hub in turn drains (SIGTERM) and starts again while requests flow: its phones
    move to the other hub and resume; every request is offered, every offer received, every
    acknowledged step in Redis, every offer left unanswered expires, every missed deadline
    has its notice, no timer is left overdue and no numbered frame comes twice."""
    squads = 200
    report = _run_loadtest(
        tmp_path / "report.json",
        "--hubs",
        "2",
        "--rolling-restart",
        "--ignore-share",
        "0.2",  # about 10 offers expire and move on
        # every accept limit (120 s and more) below the 5 s offer window: each ignored offer
        # also misses its request's deadlines, so deadline notices fire too
        "--hub-setting",
        "time_scale=0.001",
        squads=squads,
        duration=10,
        timeout_s=300,
    )
    rolling = report["rolling"]
    assert rolling["lost"] == dict.fromkeys(rolling["lost"], 0) and rolling["nothing_lost"]
    first, second = rolling["restarts"]
    # The second hub holds every phone once the first has restarted: all of them move back.
    assert (first["hub"], first["phones"], second["hub"], second["phones"]) == (0, 100, 1, 200)
    for restart in (first, second):
        assert restart["moved"] == restart["phones"] and restart["not_back"] == 0
        assert restart["moved_to_same_port"] == 0  # to the other hub, not the restarted one
        assert not restart["killed"] and restart["exit_code"] in (0, -15)
        gap = restart["gap_s"]
        assert 0 < gap["p50"] <= gap["p99"] <= gap["max"] <= restart["all_back_s"]
        assert restart["closes_spread_s"] >= 1.0  # told over DISPATCH_DRAIN_SPREAD_S (3 s)
        assert restart["draining_after_s"] < restart["exited_after_s"]
        assert restart["exited_after_s"] < restart["ready_again_after_s"]
        assert restart["during_move"]["never_offered"] == 0
    # requests flow during the first move (the second may come after the measure phase)
    assert first["during_move"]["requests"] > 0
    assert first["during_move"]["dispatch_ms"]["p50"] is not None
    assert rolling["close_codes"] == {"1012": 300}
    assert rolling["requests"] == rolling["requests_resolved"] == RATE * 10
    assert rolling["offers_received"] == rolling["offers_made"] > rolling["requests"]
    assert rolling["steps_acknowledged"] >= 4 * rolling["requests"]
    fired = rolling["fired"]
    assert fired["offers_ignored"] > 0
    assert fired["offer_expiries"] >= fired["offers_ignored"]
    assert fired["revokes_received"] >= fired["offers_ignored"]
    assert fired["deadline_notices"] == fired["deadline_notices_expected"] > 0
    assert report["squads_connected"] == squads and report["over_capacity"] == 0


def test_rolling_restart_options() -> None:
    from tools.loadtest.run import parse_args

    config = parse_args(["--hubs", "2", "--rolling-restart"])
    assert config.rolling_restart and config.offers_ignored == rr.IGNORE_SHARE
    assert parse_args(["--hubs", "2"]).offers_ignored == 0.0
    assert (
        parse_args(["--rolling-restart", "--hubs", "3", "--ignore-share", "0"]).offers_ignored == 0
    )
    for wrong in (["--rolling-restart"], ["--hubs", "2", "--rolling-restart", "--storm"]):
        with pytest.raises(SystemExit):
            parse_args(wrong)


def _restart(**changes: Any) -> rr.Restart:
    fields: dict[str, Any] = {
        "hub": 0,
        "port": 9000,
        "pid": 1,
        "phones": 3,
        "sigterm_at": 100.0,
        "draining_at": 100.05,
        "exited_at": 105.0,
        "ready_at": 108.0,
        "exit_code": -15,
        "back_at": 110.0,
        "drain_cpu_s": 0.6,
        "others_cpu_s": 5.0,
        "others_cpu_before": 0.2,
    }
    return rr.Restart(**(fields | changes))


def test_restart_summary_counts_the_phones_of_the_stopped_hub_only() -> None:
    moves = [
        (101.0, 101.2, 9000, 9001),
        (102.0, 102.5, 9000, 9001),
        (104.0, 106.0, 9000, 9000),  # back on the restarted port (its new process)
        (103.0, 103.1, 9001, 9000),  # another hub's phone
        (99.0, 99.1, 9000, 9001),  # before the SIGTERM
    ]
    summary = rr.restart_summary(_restart(), moves, away=[(104.5, 9000), (104.5, 9001)])
    assert (summary["phones"], summary["moved"], summary["not_back"]) == (3, 3, 1)
    assert summary["moved_to_same_port"] == 1
    assert summary["gap_s"]["max"] == 2.0 and summary["gap_s"]["p50"] == 0.5
    assert summary["all_back_s"] == 6.0 and summary["first_close_s"] == 1.0
    assert summary["closes_spread_s"] == 3.0
    assert summary["exited_after_s"] == 5.0 and summary["ready_again_after_s"] == 8.0
    assert summary["drain_cpu_ms_per_phone"] == 200.0
    # 5 s of the others' CPU over the 10 s to every phone back, less their 0.2 s/s before
    assert summary["takeover_cpu_s"] == 3.0 and summary["takeover_cpu_ms_per_phone"] == 1000.0
    empty = rr.restart_summary(_restart(back_at=0.0), [], [])
    assert empty["moved"] == 0 and empty["all_back_s"] is None and empty["gap_s"]["max"] is None
    assert empty["takeover_cpu_s"] is None and empty["drain_cpu_ms_per_phone"] is None


def test_move_dispatch_times_the_requests_sent_while_the_phones_moved_to_their_first_offer() -> (
    None
):
    moves = [
        (101.0, 101.2, 9000, 9001),
        (102.0, 107.0, 9000, 9001),  # the last phone of the restarted hub back: the window's end
        (103.0, 109.0, 9001, 9000),  # another hub's phone
    ]
    intakes = [
        st.Intake(99.0, 201, "R0", "S1", "A0"),  # before the SIGTERM
        st.Intake(
            101.0, 201, "R1", "S1", "A1", answered_at=101.1
        ),  # offered at intake, received 0.5 s later
        st.Intake(
            102.0, 201, "R2", answered_at=102.2
        ),  # queued at intake, offered 2 s later (twice)
        st.Intake(103.0, 201, "R3", answered_at=103.3),  # never offered
        st.Intake(104.0, 503),  # failed: not a request
        st.Intake(108.0, 201, "R4", "S2", "A4"),  # after the move
    ]
    offers = [
        ("R0", "S1", "A0", 99.1),
        ("R1", "S1", "A1", 101.5),
        ("R2", "S3", "A3", 106.0),
        ("R2", "S2", "A2", 104.0),
        ("R4", "S2", "A4", 108.1),
    ]
    # S2 lost its connection at 102.5 and was welcomed back at 103.9: R2's offer (made by
    # 102.2, received at 104.0) waited for it. S1 was welcomed back at 101.05, after R1 was
    # sent but before its intake was answered: the offer may have been made after the welcome.
    squad_moves = [("S2", 102.5, 103.9), ("S1", 100.5, 101.05), ("S3", 101.5, 105.9)]
    summary = rr.move_dispatch(_restart(), moves, intakes, offers, squad_moves)
    assert summary["waited_for_a_move"] == 1
    assert summary["window_s"] == 7.0 and summary["requests"] == 3
    assert summary["queued_at_intake"] == 2 and summary["never_offered"] == 1
    assert summary["dispatch_max_ms"] == 2000.0 and summary["dispatch_ms"]["p50"] == 1250.0
    assert summary["intake_response_ms"]["p50"] == 200.0
    nobody = rr.move_dispatch(_restart(), [], intakes, offers)
    assert nobody["window_s"] == 0.0 and nobody["dispatch_ms"]["p50"] is None


def _event(kind: str, at: float, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "at": at} | fields


def _complete_run() -> tuple[list[st.Intake], dict[str, rr.RequestSeen], rr.Seen]:
    """Two requests: R1 offered to S1 who let it expire (a notice for the missed accept
    deadline), then to S2 who did everything; R2 done by S3 in time."""
    r1 = rr.RequestSeen(
        "R1",
        {
            "state": "resolved",
            "caller_phone": "c1",
            "accept_by": "10.0",
            "arrive_by": "100.0",
            "resolve_by": "200.0",
        },
        [
            _event("offered", 1.0, assignment="A1", squad="S1", respond_by=6.0),
            _event("notice_issued", 10.2),
            _event("offer_expired", 6.1, assignment="A1"),
            _event("offered", 16.1, assignment="A2", squad="S2", respond_by=21.1),
            *(
                _event(kind, 16.2, assignment="A2")
                for kind in ("accepted", "en_route", "arrived", "resolved")
            ),
        ],
        [{"kind": "accept", "issued_at": 10.3, "due_at": 10.0}],
    )
    r2 = rr.RequestSeen(
        "R2",
        {"state": "resolved", "caller_phone": "c2", "accept_by": "50.0"},
        [
            _event("offered", 2.0, assignment="A3", squad="S3", respond_by=7.0),
            *(
                _event(kind, 2.1, assignment="A3")
                for kind in ("accepted", "en_route", "arrived", "resolved")
            ),
        ],
    )
    steps = ("accept", "enroute", "arrive", "resolve")
    seen = rr.Seen(
        offers={("A1", "S1"), ("A2", "S2"), ("A3", "S3")},
        acked=[(a, step) for a in ("A2", "A3") for step in steps],
        ignored=["A1"],
        revoked={"A1"},
        duplicates=0,
    )
    intakes = [st.Intake(0.0, 201, "R1", caller="c1"), st.Intake(0.0, 201, "R2", caller="c2")]
    return intakes, {"R1": r1, "R2": r2}, seen


def test_losses_are_zero_when_redis_holds_everything_the_phones_saw() -> None:
    intakes, requests, seen = _complete_run()
    result = rr.losses(intakes, requests, seen, {}, now_s=300.0)
    assert result["nothing_lost"] and set(result["lost"].values()) == {0}
    assert (result["requests"], result["requests_resolved"], result["offers_made"]) == (2, 2, 3)
    fired = result["fired"]
    assert (fired["offers_ignored"], fired["offer_expiries"], fired["revokes_received"]) == (
        1,
        1,
        1,
    )
    assert fired["offer_expiry_late_s"]["max"] == pytest.approx(0.1)
    assert (fired["deadline_notices_expected"], fired["deadline_notices"]) == (1, 1)
    assert fired["deadline_notice_late_s"]["max"] == pytest.approx(0.3)


def test_each_loss_is_counted() -> None:
    intakes, requests, seen = _complete_run()
    intakes = [
        *intakes,
        st.Intake(0.0, 0, error="timeout", caller="c8"),  # made nothing: lost
        st.Intake(0.0, 0, error="timeout", caller="c3"),  # made R3, answer never came
        st.Intake(0.0, 201, "R9", caller="c9"),
    ]
    requests["R1"].events = [e for e in requests["R1"].events if e["type"] != "en_route"]
    requests["R1"].events = [e for e in requests["R1"].events if e["type"] != "offer_expired"]
    requests["R1"].notices = []
    requests["R2"].events = [e for e in requests["R2"].events if e["type"] != "offered"]
    requests["R3"] = rr.RequestSeen("R3", {"state": "queued", "caller_phone": "c3"})
    requests["R4"] = rr.RequestSeen("R4", {"state": "queued", "caller_phone": "c2"})  # a twin
    seen.offers.discard(("A2", "S2"))
    seen.revoked.clear()
    result = rr.losses(intakes, requests, seen, {"offer": 2}, now_s=300.0)
    assert result["lost"] == {
        "requests_failed": 1,  # c8
        "requests_made_twice": 1,  # c2
        "requests_unknown": 1,  # R9: answered 201, unknown to Redis
        "requests_without_offer": 1,  # R2
        "offers_not_received": 1,  # A2 to S2
        "steps_not_recorded": 1,  # A2's en route
        "offer_expiries_missing": 1,  # A1 ignored, never expired
        "revokes_not_received": 0,  # (only counted for expired offers)
        "deadline_notices_missing": 1,  # R1 accepted at 16.2, due 10.0
        "timers_overdue": 2,
        "duplicate_frames": 0,
    }
    assert not result["nothing_lost"] and result["requests_made_unanswered"] == 1  # c3


def test_a_deadline_met_within_the_grace_or_not_yet_due_owes_no_notice() -> None:
    intakes, requests, seen = _complete_run()
    requests["R1"].notices = []
    requests["R1"].fields["accept_by"] = str(16.2 - rr.DEADLINE_GRACE_S / 2)
    assert rr.losses(intakes, requests, seen, {}, now_s=300.0)["nothing_lost"]
    requests["R1"].fields["accept_by"] = "5.0"
    assert rr.losses(intakes, requests, seen, {}, now_s=6.0)["nothing_lost"]  # due just now
    result = rr.losses(intakes, requests, seen, {}, now_s=300.0)
    assert result["lost"]["deadline_notices_missing"] == 1  # met 11.2 s late, no notice
    # ... unless the run's timers ran that late: an offer expiry 11.5 s after its due time
    requests["R1"].events[2]["at"] = 6.0 + 11.5
    result = rr.losses(intakes, requests, seen, {}, now_s=300.0)
    assert result["nothing_lost"] and result["fired"]["deadlines_met_within_grace"] == 1
    assert result["fired"]["deadline_grace_s"] == 11.5


def test_storm_summary_puts_every_process_on_the_first_drop() -> None:
    parts = [
        {
            "dropped_at": 100.0,
            "back_after_s": [0.5, 1.0],
            "squads": 2,
            "frames_before": 3,
            "frames_replayed": 3,
            "frames_missing": 0,
            "failed": 0,
        },
        {
            "dropped_at": 100.5,
            "back_after_s": [1.5],
            "squads": 2,
            "frames_before": 1,
            "frames_replayed": 0,
            "frames_missing": 1,
            "failed": 1,
        },
    ]
    summary = st.storm_summary(parts)
    assert summary["all_back_s"] == 2.0 and summary["back"] == 3 and summary["squads"] == 4
    assert summary["resumes_per_s"] == 1.5
    assert (summary["frames_held"], summary["frames_missing"], summary["failed"]) == (4, 1, 1)
    assert st.storm_summary([]) == {}


def test_versus_floor_divides_the_hub_by_the_floor() -> None:
    ratios = st.versus_floor({"p50": 3.0, "p99": 9.0}, {"p50": 1.5, "p99": 0.0})
    assert ratios["dispatch_p50_ratio"] == 2.0 and ratios["dispatch_p99_ratio"] is None
    assert ratios["lifecycle_cpu_ratio"] is None  # no --baseline
    ratios = st.versus_floor({}, {}, hub_lifecycle_ms=4.5, floor_lifecycle_ms=1.5)
    assert ratios["lifecycle_cpu_ratio"] == 3.0


def test_cpu_per_lifecycle_is_the_cpu_the_requests_added_shared_among_them() -> None:
    # 30 % of a core with requests, 10 % before them, over 20 s: 4 s of CPU for 600.
    assert st.cpu_ms_per_lifecycle(30.0, 10.0, 600, 20.0) == pytest.approx(6.667)
    assert st.cpu_ms_per_lifecycle(30.0, 10.0, 300, 20.0) == pytest.approx(13.333)
    assert st.cpu_ms_per_lifecycle(9.0, 10.0, 600, 20.0) == 0.0  # noise below the baseline
    assert st.cpu_ms_per_lifecycle(30.0, 10.0, 0, 20.0) is None


def test_baseline_refuses_runs_whose_requests_do_not_end_on_the_same_hubs() -> None:
    assert parse_args(["--baseline", "5", "--floor"]).baseline == 5.0
    for extra in (["--storm"], ["--client", "node"], ["--rolling-restart", "--hubs", "2"]):
        with pytest.raises(SystemExit):
            parse_args(["--baseline", "5", *extra])


def test_a_holding_squad_answers_nothing_and_counts_the_replay() -> None:
    tally = Tally()
    squad = SquadAgent("S1", "token", tally, hold=True)
    assert squad.handle(protocol.Welcome(squad="S1", last_seq=0), 1.0) == [protocol.Duty(on=True)]
    offer = _offer(1, "A1")
    assert squad.handle(offer, 1.1) == [] and len(tally.offers) == 1
    squad.start_replay()
    assert squad.hello().last_seq == 0 and not squad.replayed()
    assert squad.handle(protocol.Welcome(squad="S1", last_seq=1), 2.0) == []  # no second duty
    assert not squad.replayed()
    squad.handle(offer, 2.1)
    assert squad.replayed() and len(tally.offers) == 1  # a replayed offer is not a new one


# ---- statistics -------------------------------------------------------------------------------


def test_percentile_interpolates_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert st.percentile(values, 50) == pytest.approx(5.5)
    assert st.percentile(values, 95) == pytest.approx(9.55)
    assert st.percentile(values, 99) == pytest.approx(9.91)
    assert st.percentile(values, 0) == 1.0 and st.percentile(values, 100) == 10.0
    assert st.percentile(list(reversed(values)), 50) == pytest.approx(5.5)
    assert st.percentile([4.0], 99) == 4.0
    assert st.percentile([], 50) is None
    with pytest.raises(ValueError):
        st.percentile(values, 101)


def test_summarize_orders_and_rounds() -> None:
    values = [random.Random(1).expovariate(1.0) for _ in range(1000)]
    summary = st.summarize(values)
    assert list(summary) == ["p50", "p95", "p99"]
    assert summary["p50"] <= summary["p95"] <= summary["p99"]  # type: ignore[operator]
    assert st.summarize([], (50, 99)) == {"p50": None, "p99": None}
    assert st.summarize([1.23456], (50,)) == {"p50": 1.235}


def test_rates() -> None:
    assert st.cpu_percent(10.0, 10.5, 1.0) == 50.0
    assert st.cpu_percent(1.0, 2.0, 0.0) == 0.0
    assert st.rate(100, 1100, 2.0) == 500.0
    assert st.ingest_rate([900, 1000, 1100], 0.5) == 2000.0
    assert st.ingest_rate([], 0.5) == 0.0


def test_offers_are_matched_to_intake_by_assignment_and_squad() -> None:
    intakes = [
        st.Intake(10.0, 201, "R1", "S1", "A1", 10.004),
        st.Intake(11.0, 201, "R2", "S2", "A2", 11.003),
        st.Intake(12.0, 201, "R3"),  # queued at intake: no latency, no expectation
        st.Intake(13.0, 201, "R4", "S4", "A4", 13.002),
        st.Intake(14.0, 0, error="timeout"),  # no response
        st.Intake(15.0, 422, answered_at=15.001, error="outside_city"),
    ]
    offers = [
        st.OfferSeen("R1", "S1", "A1", 10.005),
        st.OfferSeen("R2", "S9", "A2", 11.002),  # reached another squad: lost
        st.OfferSeen("R3", "S3", "A3", 12.5),
    ]
    assert st.dispatch_latencies_ms(intakes, offers) == [pytest.approx(5.0)]
    expected = st.expected_offers(intakes)
    assert expected == [("A1", "S1"), ("A2", "S2"), ("A4", "S4")]
    assert st.missing_offers([*expected, ("A3", "S3")], offers) == [("A2", "S2"), ("A4", "S4")]
    assert st.response_latencies_ms(intakes) == [
        pytest.approx(4.0),
        pytest.approx(3.0),
        pytest.approx(2.0),
        pytest.approx(1.0),
    ]
    assert st.failures(intakes) == {"0 timeout": 1, "422 outside_city": 1}
    assert st.dispatch_series(intakes, offers, 10.0) == [(0.0, 5.0)]


# ---- WebSocket codec ----------------------------------------------------------------------------


def test_accept_value_matches_rfc_6455_example() -> None:
    assert ws.accept_value("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_response_is_checked() -> None:
    key = ws.new_key()
    good = (
        f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {ws.accept_value(key)}\r\n"
        f"Sec-WebSocket-Protocol: {protocol.SUBPROTOCOL_MSGPACK}"
    ).encode()
    ws.check_handshake_response(good, key, protocol.SUBPROTOCOL_MSGPACK)
    with pytest.raises(ws.WebSocketError):
        ws.check_handshake_response(good, ws.new_key(), protocol.SUBPROTOCOL_MSGPACK)
    with pytest.raises(ws.WebSocketError):
        ws.check_handshake_response(good, key, protocol.SUBPROTOCOL_JSON)
    with pytest.raises(ws.WebSocketError):
        ws.check_handshake_response(b"HTTP/1.1 403 Forbidden", key, protocol.SUBPROTOCOL_JSON)
    request = ws.handshake_request("127.0.0.1", 8000, "/ws/field", "p", key).decode()
    assert request.startswith("GET /ws/field HTTP/1.1\r\n") and request.endswith("\r\n\r\n")
    assert f"Sec-WebSocket-Key: {key}\r\n" in request


def _unmask(frame: bytes) -> tuple[int, bytes]:
    """(opcode, payload) of a client frame, as a server reads it."""
    size, offset = frame[1] & 0x7F, 2
    if size == 126:
        size, offset = struct.unpack_from("!H", frame, 2)[0], 4
    elif size == 127:
        size, offset = struct.unpack_from("!Q", frame, 2)[0], 10
    mask, payload = frame[offset : offset + 4], frame[offset + 4 :]
    assert frame[1] & 0x80 and len(payload) == size
    return frame[0] & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536])
def test_client_frames_are_masked_and_sized(size: int) -> None:
    payload = bytes(random.Random(size).randrange(256) for _ in range(size))
    frame = ws.encode_frame(ws.OP_BINARY, payload, b"\x01\x02\x03\x04")
    assert frame[0] == 0x82
    assert _unmask(frame) == (ws.OP_BINARY, payload)


def _server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    size = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if size < 126:
        return head + bytes([size]) + payload
    if size < 65536:
        return head + bytes([126]) + struct.pack("!H", size) + payload
    return head + bytes([127]) + struct.pack("!Q", size) + payload


def test_parser_splits_reassembles_and_passes_control_frames() -> None:
    offer = protocol.encode(protocol.Ok(id="x"))
    big = b"y" * 70_000
    stream = (
        _server_frame(ws.OP_BINARY, offer)
        + _server_frame(ws.OP_TEXT, b"ab", fin=False)
        + _server_frame(ws.OP_PING, b"p")
        + _server_frame(ws.OP_CONT, b"cd")
        + _server_frame(ws.OP_BINARY, big)
        + _server_frame(ws.OP_CLOSE, b"\x0f\xa0bye")
    )
    parser = ws.FrameParser()
    messages = []
    for i in range(0, len(stream), 7):  # any split of the byte stream
        messages += parser.feed(stream[i : i + 7])
    assert messages == [
        (ws.OP_BINARY, offer),
        (ws.OP_PING, b"p"),
        (ws.OP_TEXT, b"abcd"),
        (ws.OP_BINARY, big),
        (ws.OP_CLOSE, b"\x0f\xa0bye"),
    ]
    assert ws.close_code(messages[-1][1]) == 4000
    assert ws.close_code(b"") == ws.NO_STATUS


def test_parser_refuses_masked_and_extension_frames() -> None:
    with pytest.raises(ws.WebSocketError):
        ws.FrameParser().feed(ws.encode_frame(ws.OP_BINARY, b"x", b"abcd"))
    with pytest.raises(ws.WebSocketError):
        ws.FrameParser().feed(bytes([0xC2, 1]) + b"x")  # RSV1: compression not negotiated
    with pytest.raises(ws.WebSocketError):
        ws.FrameParser().feed(_server_frame(ws.OP_CONT, b"x"))


# ---- HTTP client ------------------------------------------------------------------------------


def test_http_request_and_response_head() -> None:
    data = request_bytes("POST", "/api/v1/requests", "h:1", {"X-A": "b"}, b"{}")
    assert data == (
        b"POST /api/v1/requests HTTP/1.1\r\nHost: h:1\r\nContent-Length: 2\r\nX-A: b\r\n\r\n{}"
    )
    assert parse_head(b"HTTP/1.1 201 Created\r\ncontent-length: 17") == (201, 17, True)
    assert parse_head(b"HTTP/1.1 200 OK\r\nConnection: close") == (200, 0, False)
    with pytest.raises(HttpError):
        parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked")
    with pytest.raises(HttpError):
        parse_head(b"garbage")


async def test_http_pool_reuses_connections_and_queues_beyond_its_size() -> None:
    accepted = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            await asyncio.sleep(0.01)
            writer.write(
                b"HTTP/1.1 201 Created\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = HttpPool("127.0.0.1", port, max_connections=3)
    try:
        replies = await asyncio.gather(
            *(pool.request("POST", "/", {}, str(i).encode()) for i in range(20))
        )
        assert [r.body for r in replies] == [str(i).encode() for i in range(20)]
        assert {r.status for r in replies} == {201} and accepted == 3
    finally:
        await pool.close()
        server.close()


# ---- squad behaviour ----------------------------------------------------------------------------


def _offer(seq: int, assignment: str) -> protocol.Offer:
    request = protocol.RequestInfo(
        id=f"R-{assignment}", category="water_main_burst", description="d", lat=34.6, lon=112.4
    )
    return protocol.Offer(seq=seq, assignment=assignment, respond_by=0.0, request=request)


def test_squad_accepts_at_once_and_walks_the_steps() -> None:
    tally = Tally()
    squad = SquadAgent("S1", "token", tally)
    assert isinstance(squad.handle(protocol.Welcome(squad="S1", last_seq=0), 0.0)[0], protocol.Duty)
    ack, accept = squad.handle(_offer(1, "A1"), 1.0)
    assert ack == protocol.Ack(seq=1)
    assert isinstance(accept, protocol.Accept) and accept.assignment == "A1"
    assert tally.offers == [("R-A1", "S1", "A1", 1.0)] and tally.pending == 1
    steps = []
    reply = squad.handle(protocol.Ok(id=accept.id), 1.002)
    while reply:
        (command,) = reply
        steps.append(command.__struct_config__.tag)
        reply = squad.handle(protocol.Ok(id=command.id), 1.003)  # type: ignore[union-attr]
    assert steps == ["enroute", "arrive", "resolve"]
    assert tally.ack_ms == [pytest.approx(2.0)]
    assert len(tally.step_ms) == 3 and tally.pending == 0
    assert not squad.holding and tally.over_capacity == 0


def test_squad_sends_unanswered_commands_again_after_a_new_welcome() -> None:
    tally = Tally()
    squad = SquadAgent("S1", "token", tally)
    assert squad.handle(protocol.Welcome(squad="S1", last_seq=0), 0.5) == [protocol.Duty(on=True)]
    _, accept = squad.handle(_offer(1, "A1"), 1.0)
    (enroute,) = squad.handle(protocol.Ok(id=accept.id), 1.1)  # type: ignore[union-attr]
    # The connection ends before the en route's ok: the next hub's welcome gets it again.
    assert squad.hello().last_seq == 1
    # (no second duty: the hub keeps it across connections)
    assert squad.handle(protocol.Welcome(squad="S1", last_seq=1), 2.0) == [enroute]
    (arrive,) = squad.handle(protocol.Ok(id=enroute.id), 2.1)  # type: ignore[union-attr]
    assert isinstance(arrive, protocol.Arrive) and tally.pending == 1
    assert tally.acked == [("A1", "accept"), ("A1", "enroute")]
    assert squad.handle(_offer(1, "A1"), 2.2) == [protocol.Ack(seq=1)]  # replayed: absorbed
    assert tally.duplicates == 1


def test_squad_leaves_its_share_of_offers_to_expire() -> None:
    tally = Tally()
    squad = SquadAgent("S1", "token", tally, ignore_share=0.999999)
    assert squad.handle(_offer(1, "A1"), 1.0) == [protocol.Ack(seq=1)]  # no accept
    assert tally.ignored == ["A1"] and tally.pending == 0 and squad.holding == {"A1"}
    revoke = protocol.Revoke(seq=2, assignment="A1", reason="offer_window_passed")
    assert squad.handle(revoke, 6.0) == [protocol.Ack(seq=2)]
    assert tally.revoked == ["A1"] and not squad.holding


def test_squad_counts_an_offer_beyond_its_capacity_and_duplicates() -> None:
    tally = Tally()
    squad = SquadAgent("S1", "token", tally)
    squad.handle(_offer(1, "A1"), 1.0)
    assert squad.handle(_offer(1, "A1"), 1.1) == [protocol.Ack(seq=1)]  # replayed: absorbed
    assert tally.duplicates == 1 and tally.over_capacity == 0
    squad.handle(_offer(2, "A2"), 1.2)  # A1 not resolved yet
    assert tally.over_capacity == 1
    squad.handle(protocol.Error(code="invalid_transition", message="m", id="S1-1"), 1.3)
    assert tally.errors == {"invalid_transition": 1} and tally.pending == 1


def test_squad_goes_on_when_the_hub_recorded_its_arrival_itself() -> None:
    tally = Tally()
    squad = SquadAgent("S1", "token", tally)
    _, accept = squad.handle(_offer(1, "A1"), 1.0)
    assert isinstance(accept, protocol.Accept)
    (enroute,) = squad.handle(protocol.Ok(id=accept.id), 1.1)
    assert isinstance(enroute, protocol.Enroute)
    (arrive,) = squad.handle(protocol.Ok(id=enroute.id), 1.2)
    assert isinstance(arrive, protocol.Arrive)
    refused = protocol.Error(code="invalid_transition", message="m", id=arrive.id)
    (resolve,) = squad.handle(refused, 1.3)
    assert isinstance(resolve, protocol.Resolve) and not squad.holding
    assert tally.auto_arrivals == 1 and not tally.errors and tally.pending == 1


# ---- plan and profile ----------------------------------------------------------------------------


def test_plan_spreads_squads_and_places_requests_in_the_city() -> None:
    city = load_city()
    counts = unit_counts(city, 1001)
    assert sum(counts.values()) == 1001 and set(counts) == {u.code for u in city.units}
    assert counts["water"] > counts["power"] > counts["gas"] > counts["telecom"] > 0
    rng = random.Random(5)
    squads = plan_squads(city, 300, rng)
    assert len(squads) == 300 and all(city.district_at(s.lat, s.lon) for s in squads)
    for plan in plan_requests(city, 200, squads, rng):
        district = city.district_at(plan.lat, plan.lon)
        assert district is not None
        unit = city.unit_for(plan.category, district.code)
        assert unit is not None and unit.code in {"water", "power", "gas", "municipal"}


def test_profile_summary_separates_idle_samples() -> None:
    lines = [
        "main (a.py:1);work (a.py:5);write (libc.so.6) 30",
        "main (a.py:1);work (a.py:7) 10",
        "main (a.py:1);epoll_pwait (libc.so.6) 60",
    ]
    profile = parse(lines)
    assert (profile.total, profile.idle) == (40, 60)
    assert profile.inclusive["work (a.py)"] == 40
    assert profile.self_samples["write (libc.so.6)"] == 30


def test_requests_arrive_at_random_or_evenly_within_the_measure_phase() -> None:
    """Poisson arrivals (the default): every request due within the duration, in order, at
    irregular intervals (so they meet the position ticks at every phase); ``even``: one
    every duration / total, as before."""
    city = load_city()
    squads = plan_squads(city, 100, random.Random(1))
    random_plans = plan_requests(city, 3000, squads, random.Random(2), 30.0)
    due = [p.at_s for p in random_plans]
    assert due == sorted(due) and due[0] >= 0 and due[-1] < 30.0
    gaps = [b - a for a, b in zip(due, due[1:], strict=False)]
    assert 0.008 < sum(gaps) / len(gaps) < 0.012  # 100 a second on average
    assert max(gaps) > 0.03 and min(gaps) < 0.001  # not a fixed period
    phases = {int((t % 0.01) / 0.001) for t in due}  # within a 10 ms position tick
    assert phases == set(range(10))
    even = plan_requests(city, 3000, squads, random.Random(2), 30.0, "even")
    assert [p.at_s for p in even[:3]] == [0.0, 0.01, 0.02]
    with pytest.raises(ValueError, match="poisson or even"):
        plan_requests(city, 3, squads, random.Random(2), 30.0, "bursty")


def test_histogram_quantiles_interpolate_within_a_bucket_like_prometheus() -> None:
    # 100 observations: 50 at or below 1 ms, 90 at or below 2 ms, 99 at or below 10 ms.
    buckets = [(0.001, 50.0), (0.002, 90.0), (0.01, 99.0), (float("inf"), 100.0)]
    assert st.histogram_quantiles(buckets, scale=1000.0) == {
        "p50": 1.0,
        "p95": 6.444,  # 2 ms + 8 ms x (95 - 90) / (99 - 90)
        "p99": 10.0,
    }
    assert st.histogram_quantiles(buckets, (25,), 1000.0) == {"p25": 0.5}
    # Beyond the last finite bound: that bound. Nothing observed: None.
    assert st.histogram_quantiles([(0.001, 0.0), (float("inf"), 4.0)], (50,)) == {"p50": 0.001}
    assert st.histogram_quantiles([(0.001, 0.0), (float("inf"), 0.0)], (50,)) == {"p50": None}
