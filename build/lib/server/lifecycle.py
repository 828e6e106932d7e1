"""The request lifecycle as a pure state machine.

``transition(request, event) -> Step`` knows every legal move and what it sets in motion; it
never awaits, touches Redis or reads the clock. The I/O layer (:mod:`server.requests`)
carries out a step atomically (one Lua script, compare-and-set on the request's version).

::

    received ──► transferred                         (police / fire / medical: leaves the flow)
        └─────► queued ◄──── offer expired ────┐
                  │                            │
                  └─► offered ─────────────────┘
                         └─► accepted ─► en_route ─► on_scene ─► resolved
                                 │          │           │
                                 └──────────┴───────────┴─► deferred (promise) ─► … ─► resolved
    offered / accepted / en_route / on_scene / deferred ─► disputed (not our jurisdiction)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class State(StrEnum):
    RECEIVED = "received"
    TRANSFERRED = "transferred"
    QUEUED = "queued"
    OFFERED = "offered"
    ACCEPTED = "accepted"
    EN_ROUTE = "en_route"
    ON_SCENE = "on_scene"
    DEFERRED = "deferred"
    DISPUTED = "disputed"
    RESOLVED = "resolved"


FINAL = frozenset({State.TRANSFERRED, State.RESOLVED})
# States in which a squad holds the request (its capacity is taken).
HELD = frozenset({State.OFFERED, State.ACCEPTED, State.EN_ROUTE, State.ON_SCENE, State.DEFERRED})


class InvalidTransition(Exception):
    """The event is not legal in the request's current state."""


@dataclass(frozen=True, slots=True)
class RequestView:
    """What the state machine needs to know of a request."""

    state: State
    squad: str = ""
    assignment: str = ""


# ---- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Triaged:
    route: str  # "linkage" or the service it was transferred to


@dataclass(frozen=True, slots=True)
class Offered:
    squad: str
    assignment: str


@dataclass(frozen=True, slots=True)
class OfferExpired:
    """The offer went unanswered: its window passed, or the squad went offline."""

    assignment: str
    reason: str = "offer_window_passed"


@dataclass(frozen=True, slots=True)
class SquadStep:
    """A step reported by the squad holding ``assignment``: accept, enroute, arrive, resolve."""

    kind: str
    assignment: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class Deferred:
    assignment: str
    until: float
    reason: str


@dataclass(frozen=True, slots=True)
class Disputed:
    assignment: str
    reason: str


Event = Triaged | Offered | OfferExpired | SquadStep | Deferred | Disputed


# ---- effects ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Effects:
    """What the I/O layer must do along with the state change, atomically where it can."""

    release_squad: bool = False  # give the squad's capacity back, drop the assignment
    requeue: bool = False  # put the request back in its unit's queue, then dispatch
    cancel_offer_timer: bool = False
    revoke_reason: str = ""  # push a ``revoke`` frame to the squad
    non_response: bool = False  # count a non-response against the unit
    notify_citizen: bool = False  # tell the caller about this step
    squad_available: bool = False  # capacity came free: the unit's queue may move


@dataclass(frozen=True, slots=True)
class Step:
    state: State
    event: str  # the name recorded in the timeline
    fields: dict[str, str] = field(default_factory=dict)  # request fields to set
    effects: Effects = Effects()


_STEP_TARGET = {
    "accept": (frozenset({State.OFFERED}), State.ACCEPTED),
    "enroute": (frozenset({State.ACCEPTED, State.DEFERRED}), State.EN_ROUTE),
    "arrive": (frozenset({State.ACCEPTED, State.EN_ROUTE, State.DEFERRED}), State.ON_SCENE),
    "resolve": (frozenset({State.ON_SCENE, State.DEFERRED}), State.RESOLVED),
}
_DEFERRABLE = frozenset({State.ACCEPTED, State.EN_ROUTE, State.ON_SCENE, State.DEFERRED})
_DISPUTABLE = HELD


def transition(request: RequestView, event: Event) -> Step:
    """The step ``event`` makes from ``request``; raises InvalidTransition if it is illegal."""
    match event:
        case Triaged(route="linkage"):
            _require(request, {State.RECEIVED}, "triage")
            return Step(State.QUEUED, "queued", {"route": "linkage"})
        case Triaged(route=route):
            _require(request, {State.RECEIVED}, "triage")
            return Step(State.TRANSFERRED, "transferred", {"route": route})
        case Offered(squad=squad, assignment=assignment):
            _require(request, {State.QUEUED}, "offer")
            return Step(State.OFFERED, "offered", {"squad": squad, "assignment": assignment})
        case OfferExpired(assignment=assignment, reason=reason):
            _require_assignment(request, assignment)
            _require(request, {State.OFFERED}, "expire offer")
            return Step(
                State.QUEUED,
                "offer_expired",
                {"squad": "", "assignment": ""},
                Effects(
                    release_squad=True,
                    requeue=True,
                    cancel_offer_timer=True,
                    revoke_reason=reason,
                    non_response=True,
                    squad_available=True,
                ),
            )
        case SquadStep(kind=kind, assignment=assignment, note=note):
            return _squad_step(request, kind, assignment, note)
        case Deferred(assignment=assignment, until=until, reason=reason):
            _require_assignment(request, assignment)
            _require(request, _DEFERRABLE, "defer")
            fields = {"promised_by": repr(until), "resolve_by": repr(until), "defer_reason": reason}
            return Step(State.DEFERRED, "deferred", fields, Effects(notify_citizen=True))
        case Disputed(assignment=assignment, reason=reason):
            _require_assignment(request, assignment)
            _require(request, _DISPUTABLE, "dispute")
            return Step(
                State.DISPUTED,
                "disputed",
                {"dispute_reason": reason, "squad": "", "assignment": ""},
                Effects(
                    release_squad=True,
                    cancel_offer_timer=request.state is State.OFFERED,
                    squad_available=True,
                ),
            )
    raise InvalidTransition(f"unknown event {event!r}")


def _squad_step(request: RequestView, kind: str, assignment: str, note: str) -> Step:
    _require_assignment(request, assignment)
    if kind not in _STEP_TARGET:
        raise InvalidTransition(f"unknown step {kind!r}")
    allowed, target = _STEP_TARGET[kind]
    _require(request, allowed, kind)
    if kind == "accept":
        return Step(
            target, "accepted", effects=Effects(cancel_offer_timer=True, notify_citizen=True)
        )
    if kind == "resolve":
        return Step(
            target,
            "resolved",
            {"result": note},
            Effects(release_squad=True, notify_citizen=True, squad_available=True),
        )
    return Step(
        target,
        {"enroute": "en_route", "arrive": "arrived"}[kind],
        effects=Effects(notify_citizen=True),
    )


def _require(request: RequestView, allowed: set[State] | frozenset[State], action: str) -> None:
    if request.state not in allowed:
        names = ", ".join(sorted(s.value for s in allowed))
        raise InvalidTransition(
            f"cannot {action} a request that is {request.state.value} (allowed from: {names})"
        )


def _require_assignment(request: RequestView, assignment: str) -> None:
    if not assignment or request.assignment != assignment:
        raise InvalidTransition("the assignment is no longer current for this request")
