"""Unit scorecards (server.reports.scorecard) against a month built by hand: every figure,
the weighting, the rank, the change against the month before; and the report periods."""

from __future__ import annotations

from typing import Any

import pytest

from server.reports import periods
from server.reports.policy import Policy, PolicyError, Ranking, Weights, load_policy
from server.reports.scorecard import (
    COUNTED_EVENTS,
    RequestFacts,
    Scorecard,
    Spread,
    facts_of,
    ledger_events,
    percentile,
    scorecards,
    tally_facts,
    timeline_events,
)
from tests.report_month import AS_OF, ZONE, T, recorded
from tests.report_month import the_month as month_recorded

EQUAL = Policy(weights=Weights(**{name: 1 for name in Weights.__struct_fields__}))


def request(*args: Any, **kwargs: Any) -> RequestFacts:
    """The facts of one request of :func:`tests.report_month.recorded`."""
    row, events = recorded(*args, **kwargs)
    return facts_of(row, ledger_events(events), AS_OF)


def the_month() -> list[RequestFacts]:
    return [facts_of(row, ledger_events(events), AS_OF) for row, events in month_recorded()]


SPOT_CHECKS = [
    ("water", "satisfied"),
    ("water", "satisfied"),
    ("water", "not_satisfied"),
    ("water", "unreachable"),
    ("power", "not_fixed"),
]


def cards(policy: Policy = EQUAL, **kwargs: Any) -> dict[str, Scorecard]:
    found = scorecards(
        the_month(),
        policy,
        spot_checks=SPOT_CHECKS,
        units=["water", "power", "gas", "roads"],
        **kwargs,
    )
    return {card.unit: card for card in found}


def test_each_requests_facts() -> None:
    facts = {f.id: f for f in the_month()}
    assert facts["W1"].verdicts == {"accept": "met", "arrive": "met", "resolve": "met"}
    assert facts["W2"].verdicts == {"accept": "missed", "arrive": "missed", "resolve": "met"}
    assert facts["W2"].promise == ("water", True)
    assert facts["W3"].disputes == (("water", "reassigned"),)
    assert facts["W3"].verdicts == {"accept": "met", "arrive": "met", "resolve": "missed"}
    assert facts["W4"].verdicts == {"accept": "pending", "arrive": "pending", "resolve": "pending"}
    assert facts["W5"].verdicts == {"accept": "void", "arrive": "void", "resolve": "void"}
    assert facts["W5"].cancelled == "duplicate"
    assert facts["P1"].took["resolve"] == 25_000 and facts["P1"].reopened == 1
    assert facts["P2"].disputes == (("power", "upheld"),)
    assert facts["G1"].promise == ("gas", False)
    assert facts["G1"].verdicts == {"accept": "met", "arrive": "met", "resolve": "missed"}
    assert facts["X1"].verdicts is None and not facts["X1"].linkage


def test_every_figure_of_the_hand_built_month() -> None:
    water, power, gas = (cards()[u] for u in ("water", "power", "gas"))

    assert (water.requests, water.resolved, water.open, water.cancelled) == (4, 2, 1, 1)
    assert water.limits == {
        "accept": {"met": 1, "missed": 1, "pending": 1, "void": 1},
        "arrive": {"met": 1, "missed": 1, "pending": 1, "void": 1},
        "resolve": {"met": 2, "missed": 0, "pending": 1, "void": 1},
    }
    assert water.on_time == {"accept": 0.5, "arrive": 0.5, "resolve": 1.0}
    assert water.times == {
        "accept": Spread(2, 250.0, 370.0, 400.0),
        "arrive": Spread(2, 1500.0, 1900.0, 2000.0),
        "resolve": Spread(2, 12_000.0, 17_600.0, 19_000.0),
    }
    assert water.non_responses == 1
    assert water.notices.total == 2
    assert water.notices.by_kind == {"accept": 1, "arrive": 1}
    assert water.notices.by_level == {"1": 2}
    assert (water.disputes.raised, water.disputes.reassigned, water.disputes.upheld) == (1, 1, 0)
    assert (water.promises.made, water.promises.kept, water.promises.broken) == (1, 1, 0)
    spot = water.spot_checks
    assert (spot.checked, spot.satisfied, spot.not_satisfied, spot.unreachable) == (4, 2, 1, 1)
    assert spot.pass_rate == pytest.approx(2 / 3)

    assert (power.requests, power.resolved, power.open, power.reopened) == (3, 3, 0, 1)
    assert power.limits["accept"] == {"met": 3, "missed": 0, "pending": 0, "void": 0}
    assert power.limits["resolve"] == {"met": 2, "missed": 1, "pending": 0, "void": 0}
    assert power.on_time == {"accept": 1.0, "arrive": 1.0, "resolve": pytest.approx(2 / 3)}
    assert power.times["accept"] == Spread(3, 50.0, 58.0, 60.0)
    assert power.times["arrive"] == Spread(3, 1000.0, 1400.0, 1500.0)
    assert power.times["resolve"] == Spread(3, 20_000.0, 24_000.0, 25_000.0)
    assert power.non_responses == 0
    assert power.notices.by_kind == {"resolve": 2}
    assert power.notices.by_level == {"1": 1, "2": 1}
    assert (power.disputes.raised, power.disputes.upheld) == (1, 1)
    assert power.promises.made == 0
    assert (power.spot_checks.not_fixed, power.spot_checks.pass_rate) == (1, 0.0)

    assert (gas.requests, gas.open) == (1, 1)
    assert gas.on_time == {"accept": 1.0, "arrive": 1.0, "resolve": 0.0}
    assert gas.times["resolve"] == Spread()
    assert (gas.promises.made, gas.promises.broken) == (1, 1)
    assert gas.notices.by_kind == {"promise": 1}
    assert gas.spot_checks.pass_rate is None


def test_the_weighting_and_the_rank() -> None:
    found = cards()
    water, power, gas, roads = (found[u] for u in ("water", "power", "gas", "roads"))
    assert water.components == pytest.approx(
        {
            "accept_on_time": 0.5,
            "arrive_on_time": 0.5,
            "resolve_on_time": 1.0,
            "spot_check_pass": 2 / 3,
            "promises_kept": 1.0,
            "responsiveness": 0.75,
            "notice_free": 0.5,
            "disputes_founded": 1.0,
        }
    )
    # every weight 1: the mean of the components that have a value
    assert water.score == round(100 * (0.5 + 0.5 + 1 + 2 / 3 + 1 + 0.75 + 0.5 + 1) / 8, 2) == 73.96
    assert power.components["promises_kept"] is None  # no promise: left out
    assert power.score == round(100 * (1 + 1 + 2 / 3 + 0 + 1 + 1 / 3 + 0) / 7, 2) == 57.14
    assert gas.score == 50.0  # accept 1, arrive 1, resolve 0, promises 0, responsive 1, notices 0
    assert (water.rank, power.rank, gas.rank) == (1, 2, 3)
    assert roads.requests == 0 and roads.score is None and roads.rank is None
    assert [c.unit for c in scorecards(the_month(), EQUAL, units=["roads"])][-1] == "roads"

    # the shipped weighting (policy.toml)
    shipped = cards(load_policy())["water"]
    expected = (15 * 0.5 + 20 * 0.5 + 25 * 1 + 20 * 2 / 3 + 10 * 1 + 5 * 0.75 + 5 * 0.5) / 100
    assert shipped.score == round(100 * expected, 2) == 72.08

    # too few requests to be ranked
    few = cards(Policy(weights=EQUAL.weights, ranking=Ranking(min_requests=2)))
    assert (few["water"].rank, few["power"].rank, few["gas"].rank) == (1, 2, None)


def test_equal_scores_share_a_rank_and_the_change_is_against_last_month() -> None:
    last = {
        "water": Scorecard(unit="water", score=80.0, rank=1),
        "power": Scorecard(unit="power", score=50.0, rank=3),
    }
    found = cards(previous=last)
    assert found["water"].score_change == round(73.96 - 80.0, 2) and found["water"].rank_change == 0
    assert found["power"].score_change == 7.14 and found["power"].rank_change == 1
    assert found["gas"].previous_score is None and found["gas"].score_change is None
    twins = [
        request("A", "water", T, "resolved", [("resolved", 10, "water")]),
        request("B", "power", T, "resolved", [("resolved", 10, "power")]),
        request("C", "gas", T, "resolved", [("resolved", 99_999, "gas")]),
    ]
    ranks = {c.unit: c.rank for c in scorecards(twins, EQUAL)}
    assert ranks == {"water": 1, "power": 1, "gas": 3}


def test_resolutions_may_be_left_out_of_requests_never_reopened() -> None:
    """What a reader of a month relies on (server.reports.store): without the resolved
    events of requests never reopened, and without offers, the facts are the same."""
    for row, events in month_recorded():
        reopened = any(e["type"] == "reopened" for e in events)
        kept = [e for e in events if e["type"] in COUNTED_EVENTS or reopened]
        kept = [e for e in kept if e["type"] != "resolved" or reopened]
        whole = facts_of(row, ledger_events(events), AS_OF)
        assert facts_of(row, ledger_events(kept), AS_OF) == whole, row["id"]


def test_the_whole_city_adds_up_as_one_group() -> None:
    city = tally_facts(the_month(), SPOT_CHECKS, group="*")["*"]
    assert city.requests == 8  # linkage only
    assert city.non_responses == 1 and city.notices.total == 5 and city.disputes.raised == 2
    assert sum(city.limits["accept"].values()) == 8


def test_events_from_the_ledger_and_from_a_timeline_agree() -> None:
    rows = [
        {"unit": "water", "type": "disputed", "at": 5.0, "data": '{"type":"disputed"}'},
        {"unit": "water", "type": "reassigned", "at": 6.0, "data": '{"unit":"power"}'},
        {"unit": "power", "type": "offered", "at": 7.0, "data": "{}"},
    ]
    timeline = [
        {"type": "received", "at": 1.0, "unit": "water"},
        {"type": "disputed", "at": 5.0},
        {"type": "reassigned", "at": 6.0, "unit": "power"},
        {"type": "offered", "at": 7.0},
    ]
    from_ledger = [(e.type, e.unit) for e in ledger_events(rows)]
    from_timeline = [(e.type, e.unit) for e in timeline_events(timeline, "power")][1:]
    assert (
        from_ledger
        == from_timeline
        == [
            ("disputed", "water"),
            ("reassigned", "water"),
            ("offered", "power"),
        ]
    )


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 50) is None
    assert percentile(list(range(11)), 90) == 9
    assert percentile([1.0, 2.0], 50) == 1.5
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_a_policy_file_with_no_weight_is_refused(tmp_path: Any) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[weights]\n" + "".join(f"{n} = 0\n" for n in Weights.__struct_fields__))
    with pytest.raises(PolicyError, match="every weight is 0"):
        load_policy(path)
    path.write_text("[weights]\naccept_on_time = -1\n")
    with pytest.raises(PolicyError, match="accept_on_time"):
        load_policy(path)


def test_periods_are_local_and_half_open() -> None:
    march = periods.month("2026-03", ZONE)
    assert periods.month_of(march.start, ZONE) == "2026-03"
    assert periods.month_of(march.end - 0.001, ZONE) == "2026-03"
    assert periods.month_of(march.end, ZONE) == "2026-04"
    assert march.end - march.start == 31 * 86_400
    assert periods.previous_month("2026-01") == "2025-12"
    assert periods.months_until("2026-02", 3) == ["2025-12", "2026-01", "2026-02"]
    week = periods.week("2026-W10", ZONE)
    assert periods.week_of(week.start, ZONE) == "2026-W10" and week.end - week.start == 7 * 86_400
    assert periods.day_of(week.start, ZONE) == "2026-03-02"  # a Monday
    assert periods.fortnight("2026-03-02", ZONE).end == week.start + 14 * 86_400
    # Other scripts' digits (int() reads them: "٢٠٢٦-١١" was November under a second name)
    # and years a date cannot reach past (9999-12's next month) are no period.
    for bad in (
        "2026-13",
        "2026-3",
        "x",
        "٢٠٢٦-١١",
        "２０２６-１１",
        "9999-12",
        "2101-01",
        "1969-12",
    ):
        with pytest.raises(periods.PeriodError):
            periods.month(bad, ZONE)
    for bad in ("2026-W54", "2026-10", "٢٠٢٦-W٤٩", "9999-W52"):
        with pytest.raises(periods.PeriodError):
            periods.week(bad, ZONE)
    for bad in ("2026-02-30", "٢٠٢٦-١١-٠١", "9999-12-31"):
        with pytest.raises(periods.PeriodError):
            periods.fortnight(bad, ZONE)
    assert periods.month("2100-12", ZONE).end > periods.month("2100-12", ZONE).start
