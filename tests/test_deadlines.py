"""The deadline rules (server.deadlines): pure, no I/O."""

from __future__ import annotations

import pytest

from server import deadlines
from server.deadlines import Due, Milestone, NoticeKind, Progress
from server.lifecycle import State
from server.store import timers

RID = "20261130-001001"


def test_intake_schedules_the_three_deadlines() -> None:
    changes = deadlines.timer_changes(
        RID, State.QUEUED, {"accept_by": "100.5", "arrive_by": "200", "resolve_by": "300"}
    )
    assert changes.add == {
        f"deadline:{RID}:accept": 100_500,
        f"deadline:{RID}:arrive": 200_000,
        f"deadline:{RID}:resolve": 300_000,
    }
    assert changes.remove == ()


def test_a_promise_replaces_the_resolve_deadline() -> None:
    fields = {"promised_by": "500", "resolve_by": "500", "state": "deferred"}
    changes = deadlines.timer_changes(RID, State.DEFERRED, fields)
    assert changes.add == {f"deadline:{RID}:promise": 500_000}
    assert set(changes.remove) == {f"deadline:{RID}:resolve", f"deadline:{RID}:accept"}


def test_a_reopen_gets_a_fresh_resolve_deadline() -> None:
    changes = deadlines.timer_changes(RID, State.QUEUED, {"resolve_by": "900", "result": ""})
    assert changes.add == {f"deadline:{RID}:resolve": 900_000}


@pytest.mark.parametrize(
    ("state", "dropped"),
    [
        (State.ACCEPTED, {"accept"}),
        (State.EN_ROUTE, {"accept"}),
        (State.ON_SCENE, {"accept", "arrive"}),
        (State.RESOLVED, {"accept", "arrive", "resolve", "promise"}),
        (State.CANCELLED, {"accept", "arrive", "resolve", "promise"}),
        (State.OFFERED, set()),
        (State.DISPUTED, set()),
    ],
)
def test_a_milestone_met_drops_its_timers(state: State, dropped: set[str]) -> None:
    changes = deadlines.timer_changes(RID, state, {"state": state.value})
    assert {m.rpartition(":")[2] for m in changes.remove} == dropped
    assert changes.add == {}


def test_which_notices_a_step_closes() -> None:
    assert deadlines.closes(State.ACCEPTED) == {NoticeKind.ACCEPT, NoticeKind.WAITING}
    assert deadlines.closes(State.ON_SCENE) == {
        NoticeKind.ACCEPT,
        NoticeKind.WAITING,
        NoticeKind.ARRIVE,
    }
    assert deadlines.closes(State.RESOLVED) == set(NoticeKind)
    assert deadlines.closes(State.CANCELLED) == set(NoticeKind)
    assert deadlines.closes(State.QUEUED) == set()
    assert deadlines.closes(State.DISPUTED) == set()


def test_stamps_record_first_acceptance_and_arrival() -> None:
    assert deadlines.stamps(State.ACCEPTED) == ("accepted_at",)
    assert deadlines.stamps(State.ON_SCENE) == ("accepted_at", "arrived_at")
    assert deadlines.stamps(State.RESOLVED) == ()
    assert deadlines.stamps(State.OFFERED) == ()


def _progress(state: State, **extra: float) -> Progress:
    base = {"accept_by": 10.0, "arrive_by": 20.0, "resolve_by": 30.0}
    return Progress(state=state, **(base | extra))


def test_accept_limit_passed_in_the_queue_is_waiting() -> None:
    decision = deadlines.notice_due(_progress(State.QUEUED), Milestone.ACCEPT, 11.0)
    assert decision == deadlines.Decision(Due.ISSUE, NoticeKind.WAITING, 10.0)


def test_accept_limit_passed_with_an_offer_unanswered_is_accept() -> None:
    for state in (State.OFFERED, State.DISPUTED):
        decision = deadlines.notice_due(_progress(state), Milestone.ACCEPT, 11.0)
        assert decision.kind is NoticeKind.ACCEPT


def test_accepted_once_stays_accepted_after_a_dispute() -> None:
    progress = _progress(State.DISPUTED, accepted_at=5.0)
    assert deadlines.notice_due(progress, Milestone.ACCEPT, 11.0).due is Due.DROP


def test_met_milestones_give_no_notice() -> None:
    assert (
        deadlines.notice_due(_progress(State.ACCEPTED, accepted_at=5.0), Milestone.ACCEPT, 11.0).due
        is Due.DROP
    )
    on_scene = _progress(State.ON_SCENE, accepted_at=5.0, arrived_at=6.0)
    assert deadlines.notice_due(on_scene, Milestone.ARRIVE, 21.0).due is Due.DROP
    # Deferred before arriving: the arrival is still due.
    deferred = _progress(State.DEFERRED, accepted_at=5.0, promised_by=40.0, resolve_by=40.0)
    assert deadlines.notice_due(deferred, Milestone.ARRIVE, 21.0).kind is NoticeKind.ARRIVE
    for state in (State.RESOLVED, State.CANCELLED, State.TRANSFERRED):
        for milestone in Milestone:
            assert deadlines.notice_due(_progress(state), milestone, 99.0).due is Due.DROP


def test_not_yet_due_is_rescheduled() -> None:
    decision = deadlines.notice_due(_progress(State.OFFERED), Milestone.ACCEPT, 9.0)
    assert decision == deadlines.Decision(Due.LATER, at=10.0)


def test_a_promise_takes_over_the_resolve_deadline() -> None:
    promised = _progress(State.DEFERRED, accepted_at=1.0, promised_by=50.0, resolve_by=50.0)
    assert deadlines.notice_due(promised, Milestone.RESOLVE, 60.0).due is Due.DROP
    decision = deadlines.notice_due(promised, Milestone.PROMISE, 60.0)
    assert decision == deadlines.Decision(Due.ISSUE, NoticeKind.PROMISE, 50.0)
    # Reopened later with a new resolve_by: the old promise is nobody's business.
    reopened = _progress(State.QUEUED, accepted_at=1.0, promised_by=50.0, resolve_by=80.0)
    assert deadlines.notice_due(reopened, Milestone.PROMISE, 60.0).due is Due.DROP
    assert deadlines.notice_due(reopened, Milestone.RESOLVE, 81.0).kind is NoticeKind.RESOLVE


def test_kind_is_met() -> None:
    accepted = _progress(State.ACCEPTED, accepted_at=1.0)
    assert deadlines.kind_is_met(accepted, NoticeKind.WAITING)
    assert deadlines.kind_is_met(accepted, NoticeKind.ACCEPT)
    assert not deadlines.kind_is_met(accepted, NoticeKind.ARRIVE)
    assert not deadlines.kind_is_met(accepted, NoticeKind.PROMISE)
    assert deadlines.kind_is_met(_progress(State.RESOLVED), NoticeKind.PROMISE)


def test_ids_and_timer_entries_round_trip() -> None:
    nid = deadlines.notice_id(RID, NoticeKind.ACCEPT, 1)
    assert nid == "20261130-001001-accept-1"
    assert deadlines.parse_notice_id(nid) == (RID, NoticeKind.ACCEPT, 1)
    assert deadlines.parse_notice_id("x-bogus-1") is None
    member = deadlines.escalation_entry(RID, NoticeKind.PROMISE, 3)
    kind, ident = timers.parse(member)
    assert kind is timers.TimerKind.ESCALATE
    assert deadlines.parse_escalation(ident) == (RID, NoticeKind.PROMISE, 3)
    kind, ident = timers.parse(deadlines.deadline_entry(RID, Milestone.ARRIVE))
    assert kind is timers.TimerKind.DEADLINE
    assert deadlines.parse_deadline(ident) == (RID, Milestone.ARRIVE)
    assert deadlines.parse_deadline(f"{RID}:nope") is None
    assert deadlines.parse_escalation(f"{RID}:accept:x") is None


def test_escalation_levels_count_from_the_deadline() -> None:
    assert deadlines.escalation_at(100.0, 1, 30.0) == 130.0
    assert deadlines.escalation_at(100.0, 3, 30.0) == 190.0


def test_next_deadline_is_the_first_unmet() -> None:
    assert deadlines.next_deadline(_progress(State.OFFERED)) == deadlines.NextDeadline(
        Milestone.ACCEPT, 10.0
    )
    accepted = _progress(State.EN_ROUTE, accepted_at=1.0)
    assert deadlines.next_deadline(accepted) == deadlines.NextDeadline(Milestone.ARRIVE, 20.0)
    arrived = _progress(State.ON_SCENE, accepted_at=1.0, arrived_at=2.0)
    assert deadlines.next_deadline(arrived) == deadlines.NextDeadline(Milestone.RESOLVE, 30.0)
    promised = _progress(
        State.DEFERRED, accepted_at=1.0, arrived_at=2.0, promised_by=70.0, resolve_by=70.0
    )
    assert deadlines.next_deadline(promised) == deadlines.NextDeadline(Milestone.PROMISE, 70.0)
    assert deadlines.next_deadline(_progress(State.RESOLVED)) is None


def test_queue_order_puts_overdue_first_then_nearest() -> None:
    now = 15.0
    items = {
        "late": deadlines.NextDeadline(Milestone.ACCEPT, 10.0),
        "later_late": deadlines.NextDeadline(Milestone.ARRIVE, 12.0),
        "soon": deadlines.NextDeadline(Milestone.RESOLVE, 16.0),
        "far": deadlines.NextDeadline(Milestone.RESOLVE, 99.0),
        "none": None,
    }
    ordered = sorted(items, key=lambda k: deadlines.queue_order(items[k], now))
    assert ordered == ["late", "later_late", "soon", "far", "none"]
