"""The request state machine: every legal move with its target and effects; illegal ones refused."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from server.lifecycle import (
    CANCEL_REASONS,
    FINAL,
    HELD,
    LEAD_CLOSED,
    STATE_AFTER_EVENT,
    Cancelled,
    Deferred,
    Disputed,
    Effects,
    Event,
    InvalidTransition,
    Offered,
    OfferExpired,
    Reopened,
    RequestView,
    Ruled,
    SquadStep,
    State,
    Step,
    Triaged,
    leaving,
    transition,
)

S = State
SQUAD = "squad-7"
CURRENT = "asg-1"
UNTIL = 1_767_225_600.25

# One event of each kind, all naming the current assignment (so only the state decides).
EVENTS: dict[str, Event] = {
    "triage_linkage": Triaged("linkage"),
    "triage_police": Triaged("police"),
    "offer": Offered(squad="squad-9", assignment="asg-2"),
    "expire": OfferExpired(CURRENT),
    "accept": SquadStep("accept", CURRENT),
    "enroute": SquadStep("enroute", CURRENT),
    "arrive": SquadStep("arrive", CURRENT),
    "resolve": SquadStep("resolve", CURRENT, note="fixed the street lamp"),
    "defer": Deferred(CURRENT, until=UNTIL, reason="needs a spare part"),
    "dispute": Disputed(CURRENT, reason="this is the water company's pipe"),
    "uphold": Ruled("uphold"),
    "reassign": Ruled("reassign", unit="gas", category="gas_leak_smell"),
    "cancel": Cancelled("withdrawn"),
    "reopen": Reopened(resolve_by=UNTIL),
}
CANCELLABLE = (S.QUEUED, S.OFFERED, S.ACCEPTED, S.EN_ROUTE, S.ON_SCENE, S.DEFERRED, S.DISPUTED)

# Written from the lifecycle spec, not from the module's tables: (state, event kind) -> target.
LEGAL: dict[tuple[State, str], State] = {
    (S.RECEIVED, "triage_linkage"): S.QUEUED,
    (S.RECEIVED, "triage_police"): S.TRANSFERRED,
    (S.QUEUED, "offer"): S.OFFERED,
    (S.OFFERED, "expire"): S.QUEUED,
    (S.OFFERED, "accept"): S.ACCEPTED,
    (S.ACCEPTED, "enroute"): S.EN_ROUTE,
    (S.DEFERRED, "enroute"): S.EN_ROUTE,
    (S.ACCEPTED, "arrive"): S.ON_SCENE,
    (S.EN_ROUTE, "arrive"): S.ON_SCENE,
    (S.DEFERRED, "arrive"): S.ON_SCENE,
    (S.ON_SCENE, "resolve"): S.RESOLVED,
    (S.DEFERRED, "resolve"): S.RESOLVED,
    (S.ACCEPTED, "defer"): S.DEFERRED,
    (S.EN_ROUTE, "defer"): S.DEFERRED,
    (S.ON_SCENE, "defer"): S.DEFERRED,
    (S.DEFERRED, "defer"): S.DEFERRED,
    (S.OFFERED, "dispute"): S.DISPUTED,
    (S.ACCEPTED, "dispute"): S.DISPUTED,
    (S.EN_ROUTE, "dispute"): S.DISPUTED,
    (S.ON_SCENE, "dispute"): S.DISPUTED,
    (S.DEFERRED, "dispute"): S.DISPUTED,
    (S.DISPUTED, "uphold"): S.QUEUED,
    (S.DISPUTED, "reassign"): S.QUEUED,
    **{(s, "cancel"): S.CANCELLED for s in CANCELLABLE},
    (S.RESOLVED, "reopen"): S.QUEUED,
}

ALL_PAIRS = [(state, kind) for state in State for kind in EVENTS]


def view(state: State, assignment: str = CURRENT) -> RequestView:
    return RequestView(state=state, squad=SQUAD, assignment=assignment)


def test_table_covers_every_state_and_kind() -> None:
    assert len(ALL_PAIRS) == len(State) * len(EVENTS) == 154
    assert set(LEGAL) <= set(ALL_PAIRS)


@pytest.mark.parametrize(("state", "kind"), ALL_PAIRS, ids=[f"{s.value}-{k}" for s, k in ALL_PAIRS])
def test_legality_of_every_state_event_pair(state: State, kind: str) -> None:
    event = EVENTS[kind]
    if (state, kind) in LEGAL:
        step = transition(view(state), event)
        assert step.state is LEGAL[(state, kind)]
    else:
        with pytest.raises(InvalidTransition) as info:
            transition(view(state), event)
        # The message names the state the request is in.
        assert re.search(rf"\bis {state.value}\b", str(info.value)), str(info.value)


# ---- exact steps of every legal transition -------------------------------------------------

RELEASE = dict(release_squad=True, squad_available=True)


@dataclass(frozen=True)
class Case:
    state: State
    kind: str
    step: Step


def _defer_step() -> Step:
    return Step(
        S.DEFERRED,
        "deferred",
        {
            "promised_by": repr(UNTIL),
            "resolve_by": repr(UNTIL),
            "defer_reason": "needs a spare part",
        },
        Effects(notify_citizen=True),
    )


def _dispute_step(cancel_timer: bool) -> Step:
    return Step(
        S.DISPUTED,
        "disputed",
        {
            "dispute_reason": "this is the water company's pipe",
            "disputed_by": SQUAD,
            "squad": "",
            "assignment": "",
        },
        Effects(**RELEASE, cancel_offer_timer=cancel_timer),
    )


def _cancel_step(state: State) -> Step:
    held = state in HELD
    return Step(
        S.CANCELLED,
        "cancelled",
        {"cancel_reason": "withdrawn", "duplicate_of": "", "squad": "", "assignment": ""},
        Effects(
            release_squad=held,
            squad_available=held,
            revoke_reason="cancelled" if held else "",
            cancel_offer_timer=state is S.OFFERED,
            dequeue=state is S.QUEUED,
            notify_citizen=True,
            closes=True,
        ),
    )


EXPECTED_STEPS = [
    Case(
        S.RECEIVED,
        "triage_linkage",
        Step(S.QUEUED, "queued", {"route": "linkage"}, Effects(requeue=True, opens=True)),
    ),
    Case(
        S.RECEIVED,
        "triage_police",
        Step(S.TRANSFERRED, "transferred", {"route": "police"}, Effects(notify_citizen=True)),
    ),
    Case(
        S.QUEUED,
        "offer",
        Step(
            S.OFFERED,
            "offered",
            {"squad": "squad-9", "assignment": "asg-2"},
            Effects(dequeue=True),
        ),
    ),
    Case(
        S.OFFERED,
        "expire",
        Step(
            S.QUEUED,
            "offer_expired",
            {"squad": "", "assignment": ""},
            Effects(
                **RELEASE,
                requeue=True,
                cancel_offer_timer=True,
                revoke_reason="offer_window_passed",
                non_response=True,
            ),
        ),
    ),
    Case(
        S.OFFERED,
        "accept",
        Step(S.ACCEPTED, "accepted", {}, Effects(cancel_offer_timer=True, notify_citizen=True)),
    ),
    Case(S.ACCEPTED, "enroute", Step(S.EN_ROUTE, "en_route", {}, Effects(notify_citizen=True))),
    Case(S.DEFERRED, "enroute", Step(S.EN_ROUTE, "en_route", {}, Effects(notify_citizen=True))),
    Case(S.ACCEPTED, "arrive", Step(S.ON_SCENE, "arrived", {}, Effects(notify_citizen=True))),
    Case(S.EN_ROUTE, "arrive", Step(S.ON_SCENE, "arrived", {}, Effects(notify_citizen=True))),
    Case(S.DEFERRED, "arrive", Step(S.ON_SCENE, "arrived", {}, Effects(notify_citizen=True))),
    *[
        Case(
            s,
            "resolve",
            Step(
                S.RESOLVED,
                "resolved",
                {"result": "fixed the street lamp"},
                Effects(**RELEASE, notify_citizen=True, closes=True),
            ),
        )
        for s in (S.ON_SCENE, S.DEFERRED)
    ],
    *[Case(s, "defer", _defer_step()) for s in (S.ACCEPTED, S.EN_ROUTE, S.ON_SCENE, S.DEFERRED)],
    Case(S.OFFERED, "dispute", _dispute_step(cancel_timer=True)),
    *[
        Case(s, "dispute", _dispute_step(cancel_timer=False))
        for s in (S.ACCEPTED, S.EN_ROUTE, S.ON_SCENE, S.DEFERRED)
    ],
    Case(S.DISPUTED, "uphold", Step(S.QUEUED, "upheld", {}, Effects(requeue=True))),
    Case(
        S.DISPUTED,
        "reassign",
        Step(
            S.QUEUED,
            "reassigned",
            {"unit": "gas", "category": "gas_leak_smell"},
            Effects(requeue=True, move_to_unit="gas"),
        ),
    ),
    *[Case(s, "cancel", _cancel_step(s)) for s in CANCELLABLE],
    Case(
        S.RESOLVED,
        "reopen",
        Step(
            S.QUEUED,
            "reopened",
            {"resolve_by": repr(UNTIL), "result": "", "squad": "", "assignment": ""},
            Effects(requeue=True, opens=True),
        ),
    ),
]


CASE_IDS = [f"{c.state.value}-{c.kind}" for c in EXPECTED_STEPS]


def test_expected_steps_cover_every_legal_pair() -> None:
    assert {(c.state, c.kind) for c in EXPECTED_STEPS} == set(LEGAL)


@pytest.mark.parametrize("case", EXPECTED_STEPS, ids=CASE_IDS)
def test_legal_step_target_fields_and_effects(case: Case) -> None:
    assert transition(view(case.state), EVENTS[case.kind]) == case.step


@pytest.mark.parametrize("case", EXPECTED_STEPS, ids=CASE_IDS)
def test_capacity_is_released_exactly_when_the_squad_lets_go(case: Case) -> None:
    """Leaving the held states frees the squad; moving within them (or outside them) does not."""
    effects = transition(view(case.state), EVENTS[case.kind]).effects
    lets_go = case.state in HELD and case.step.state not in HELD
    assert effects.release_squad is lets_go
    assert effects.squad_available is lets_go


# ---- named behaviours --------------------------------------------------------------------


def test_offer_expired_releases_requeues_counts_and_revokes() -> None:
    step = transition(view(S.OFFERED), OfferExpired(CURRENT))
    assert step.state is S.QUEUED
    assert step.effects.release_squad
    assert step.effects.requeue
    assert step.effects.non_response
    assert step.effects.revoke_reason == "offer_window_passed"
    assert step.fields["squad"] == "" and step.fields["assignment"] == ""


def test_resolve_releases_squad_and_notifies_citizen() -> None:
    step = transition(view(S.ON_SCENE), SquadStep("resolve", CURRENT, note="done"))
    assert step.state is S.RESOLVED
    assert step.effects.release_squad and step.effects.notify_citizen
    assert step.fields == {"result": "done"}
    assert not step.effects.requeue and not step.effects.non_response


def test_accept_cancels_the_offer_timer() -> None:
    step = transition(view(S.OFFERED), SquadStep("accept", CURRENT))
    assert step.effects.cancel_offer_timer
    assert not step.effects.release_squad


def test_dispute_cancels_the_offer_timer_only_from_offered() -> None:
    assert transition(view(S.OFFERED), Disputed(CURRENT, "x")).effects.cancel_offer_timer
    for state in (S.ACCEPTED, S.EN_ROUTE, S.ON_SCENE, S.DEFERRED):
        assert not transition(view(state), Disputed(CURRENT, "x")).effects.cancel_offer_timer


def test_defer_records_the_promise_as_a_round_tripping_number() -> None:
    step = transition(view(S.ON_SCENE), Deferred(CURRENT, until=UNTIL, reason="r"))
    assert float(step.fields["promised_by"]) == UNTIL
    assert float(step.fields["resolve_by"]) == UNTIL
    assert step.fields["defer_reason"] == "r"


@pytest.mark.parametrize("route", ["police", "fire", "medical"])
def test_triage_to_an_emergency_service_transfers(route: str) -> None:
    step = transition(RequestView(S.RECEIVED), Triaged(route))
    assert step.state is S.TRANSFERRED and step.state in FINAL
    assert step.fields == {"route": route}


def test_triage_linkage_queues() -> None:
    step = transition(RequestView(S.RECEIVED), Triaged("linkage"))
    assert step.state is S.QUEUED and step.state not in FINAL


@pytest.mark.parametrize(
    ("state", "kind", "action"),
    [
        (S.OFFERED, "resolve", "resolve"),
        (S.ACCEPTED, "accept", "accept"),
        (S.EN_ROUTE, "resolve", "resolve"),
        (S.QUEUED, "triage_linkage", "triage"),
        (S.ON_SCENE, "expire", "expire offer"),
    ],
)
def test_illegal_message_names_action_and_state(state: State, kind: str, action: str) -> None:
    expected = rf"cannot {action} a request that is {state.value} \(allowed from: "
    with pytest.raises(InvalidTransition, match=expected):
        transition(view(state), EVENTS[kind])


@pytest.mark.parametrize("state", sorted(FINAL))
@pytest.mark.parametrize("kind", list(EVENTS))
def test_nothing_moves_a_final_request_but_a_reopening(state: State, kind: str) -> None:
    if (state, kind) == (S.RESOLVED, "reopen"):
        return  # the center reopens a resolved item (a spot check found it not fixed)
    with pytest.raises(InvalidTransition, match=state.value):
        transition(view(state), EVENTS[kind])


def test_final_states_are_transferred_resolved_and_cancelled() -> None:
    assert {S.TRANSFERRED, S.RESOLVED, S.CANCELLED} == FINAL


@pytest.mark.parametrize("case", EXPECTED_STEPS, ids=CASE_IDS)
def test_every_step_lands_in_the_state_the_event_table_names(case: Case) -> None:
    """One table (used by the ledger and the simulation) and the machine agree."""
    step = transition(view(case.state), EVENTS[case.kind])
    assert STATE_AFTER_EVENT[step.event] is step.state


@pytest.mark.parametrize("case", EXPECTED_STEPS, ids=CASE_IDS)
def test_open_requests_set_changes_exactly_when_finality_does(case: Case) -> None:
    effects = transition(view(case.state), EVENTS[case.kind]).effects
    was_open = case.state not in FINAL and case.state is not S.RECEIVED
    now_open = case.step.state not in FINAL
    assert effects.closes is (was_open and not now_open)
    assert effects.opens is (not was_open and now_open)


def test_a_duplicate_names_its_original_and_only_a_duplicate_does() -> None:
    step = transition(view(S.QUEUED), Cancelled("duplicate", duplicate_of="20261130-001001"))
    assert step.fields["duplicate_of"] == "20261130-001001"
    with pytest.raises(InvalidTransition, match="duplicate_of"):
        transition(view(S.QUEUED), Cancelled("duplicate"))
    with pytest.raises(InvalidTransition, match="duplicate_of"):
        transition(view(S.QUEUED), Cancelled("withdrawn", duplicate_of="x"))
    with pytest.raises(InvalidTransition, match="unknown reason"):
        transition(view(S.QUEUED), Cancelled("bored"))


def test_a_reassignment_names_a_unit_and_rulings_are_known() -> None:
    with pytest.raises(InvalidTransition, match="names the unit"):
        transition(view(S.DISPUTED), Ruled("reassign"))
    with pytest.raises(InvalidTransition, match="unknown ruling"):
        transition(view(S.DISPUTED), Ruled("shrug"))


# ---- the assignment must be the current one -------------------------------------------------

STALE = "asg-0"
STALE_EVENTS: list[tuple[State, Event]] = [
    (S.OFFERED, OfferExpired(STALE)),
    (S.OFFERED, SquadStep("accept", STALE)),
    (S.ACCEPTED, SquadStep("enroute", STALE)),
    (S.EN_ROUTE, SquadStep("arrive", STALE)),
    (S.ON_SCENE, SquadStep("resolve", STALE)),
    (S.ON_SCENE, Deferred(STALE, until=UNTIL, reason="r")),
    (S.OFFERED, Disputed(STALE, reason="r")),
    (S.ACCEPTED, Disputed(STALE, reason="r")),
]


@pytest.mark.parametrize(("state", "event"), STALE_EVENTS)
def test_stale_assignment_is_refused(state: State, event: Event) -> None:
    with pytest.raises(InvalidTransition, match="no longer current"):
        transition(view(state), event)


@pytest.mark.parametrize(("state", "event"), STALE_EVENTS)
def test_empty_assignment_never_matches(state: State, event: Event) -> None:
    # A request with no assignment and an event with an empty one: still not current.
    empty = type(event)(**{**{f: getattr(event, f) for f in event.__slots__}, "assignment": ""})
    with pytest.raises(InvalidTransition, match="no longer current"):
        transition(view(state, assignment=""), empty)


def test_unknown_squad_step_is_refused() -> None:
    with pytest.raises(InvalidTransition, match="unknown step 'teleport'"):
        transition(view(S.ACCEPTED), SquadStep("teleport", CURRENT))


def test_unknown_event_is_refused() -> None:
    with pytest.raises(InvalidTransition, match="unknown event"):
        transition(view(S.RECEIVED), object())  # type: ignore[arg-type]


# ---- the center's steps ---------------------------------------------------------------------


def test_a_dispute_remembers_the_squad_that_disputed() -> None:
    step = transition(view(S.ACCEPTED), Disputed(CURRENT, reason="not ours"))
    assert step.fields["disputed_by"] == SQUAD and step.fields["squad"] == ""


def test_a_move_leaves_the_old_unit_queue_and_open_set_only() -> None:
    step = transition(view(S.DISPUTED), Ruled("reassign", unit="gas"))
    left = leaving(step)
    assert (left.state, left.event, left.fields) == (step.state, step.event, step.fields)
    assert left.effects == Effects(dequeue=True, closes=True)
    with pytest.raises(ValueError):
        leaving(transition(view(S.DISPUTED), Ruled("uphold")))


def test_an_assist_item_ends_with_its_lead_but_the_center_cannot_say_so() -> None:
    step = transition(view(S.OFFERED), Cancelled(LEAD_CLOSED))
    assert step.fields["cancel_reason"] == LEAD_CLOSED and step.effects.revoke_reason
    assert LEAD_CLOSED not in CANCEL_REASONS


def test_a_reassignment_records_its_assisting_units() -> None:
    step = transition(view(S.DISPUTED), Ruled("reassign", unit="gas", assist=("power", "water")))
    assert step.fields == {"unit": "gas", "assist": "power,water"}
    assert step.effects.move_to_unit == "gas"
    with pytest.raises(InvalidTransition, match="itself"):
        transition(view(S.DISPUTED), Ruled("reassign", unit="gas", assist=("gas",)))
    with pytest.raises(InvalidTransition, match="reassignment"):
        transition(view(S.DISPUTED), Ruled("uphold", assist=("gas",)))
