"""The request lifecycle as a pure state machine: the one authority for every transition.

``transition(request, event) -> Step`` knows every legal move and what it sets in motion; it
never awaits, touches Redis or reads the clock. The I/O layers carry a step out atomically
(``apply.lua`` for most steps, ``claim.lua`` for an offer, which also picks the squad), and
the ledger and the simulation read the state an event leaves a request in from
:data:`STATE_AFTER_EVENT`, the one table of it.

::

    received ──► transferred                         (police / fire / medical: leaves the flow)
        └─────► queued ◄──── offer expired ────┐
                  │                            │
                  └─► offered ─────────────────┘
                         └─► accepted ─► en_route ─► on_scene ─► resolved ──► queued (reopened)
                                 │          │           │
                                 └──────────┴───────────┴─► deferred (promise) ─► … ─► resolved
    offered / accepted / en_route / on_scene / deferred ─► disputed (not our jurisdiction)
    disputed ─► queued (ruling: upheld, or reassigned to the unit with jurisdiction)
    any open state ─► cancelled (center: duplicate, withdrawn, unfounded)
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
    CANCELLED = "cancelled"


FINAL = frozenset({State.TRANSFERRED, State.RESOLVED, State.CANCELLED})
# States in which a squad holds the request (its capacity is taken).
HELD = frozenset({State.OFFERED, State.ACCEPTED, State.EN_ROUTE, State.ON_SCENE, State.DEFERRED})
OPEN = frozenset(State) - FINAL

# The state a request is in right after each recorded event. Events not named here (notes,
# notices, citizen messages, a squad going offline) leave the state as it was.
STATE_AFTER_EVENT: dict[str, State] = {
    "received": State.RECEIVED,
    "queued": State.QUEUED,
    "transferred": State.TRANSFERRED,
    "offered": State.OFFERED,
    "offer_expired": State.QUEUED,
    "accepted": State.ACCEPTED,
    "en_route": State.EN_ROUTE,
    "arrived": State.ON_SCENE,
    "deferred": State.DEFERRED,
    "disputed": State.DISPUTED,
    "upheld": State.QUEUED,
    "reassigned": State.QUEUED,
    "resolved": State.RESOLVED,
    "reopened": State.QUEUED,
    "cancelled": State.CANCELLED,
}
# Events after which no squad holds the request, nor has it finished: the record forgets the
# squad (a resolved or cancelled request keeps, in the record, the squad that had it last).
SQUAD_RELEASED = frozenset(
    e for e, s in STATE_AFTER_EVENT.items() if s not in HELD | {State.RESOLVED, State.CANCELLED}
)


class InvalidTransition(Exception):
    """The event is not legal in the request's current state."""

    def __init__(self, message: str, state: State | None = None) -> None:
        super().__init__(message)
        self.state = state  # the request's state when it was refused (None: not a state issue)


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
    """Offer the request under ``assignment``; ``squad`` is the one that won the claim (the
    claim script picks it among the candidates and sets it when empty here)."""

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


@dataclass(frozen=True, slots=True)
class Ruled:
    """The center's ruling on a disputed request: ``uphold`` (the unit goes on with it) or
    ``reassign`` to ``unit`` (optionally as ``category``)."""

    decision: str
    unit: str = ""
    category: str = ""
    assist: tuple[str, ...] = ()  # units ordered to assist the unit with jurisdiction


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The center cancels an open request: ``duplicate`` (of ``duplicate_of``),
    ``withdrawn`` or ``unfounded``."""

    reason: str
    duplicate_of: str = ""


@dataclass(frozen=True, slots=True)
class Reopened:
    """The center reopens a resolved request; ``resolve_by`` is its new resolution deadline."""

    resolve_by: float


Event = (
    Triaged
    | Offered
    | OfferExpired
    | SquadStep
    | Deferred
    | Disputed
    | Ruled
    | Cancelled
    | Reopened
)


# ---- effects ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Effects:
    """What the I/O layer must do along with the state change, atomically where it can."""

    release_squad: bool = False  # give the squad's capacity back, drop the assignment
    requeue: bool = False  # put the request back in its unit's queue, then dispatch
    dequeue: bool = False  # take the request out of its unit's queue
    cancel_offer_timer: bool = False
    revoke_reason: str = ""  # push a ``revoke`` frame to the squad
    non_response: bool = False  # count a non-response against the unit
    notify_citizen: bool = False  # tell the caller about this step
    squad_available: bool = False  # capacity came free: the unit's queue may move
    opens: bool = False  # the request is (again) among its unit's open requests
    closes: bool = False  # the request leaves its unit's open requests
    move_to_unit: str = ""  # the request now belongs to this unit (a ruling reassigned it)


@dataclass(frozen=True, slots=True)
class Step:
    state: State
    event: str  # the name recorded in the timeline
    fields: dict[str, str] = field(default_factory=dict)  # request fields to set
    effects: Effects = Effects()


def _step(event: str, fields: dict[str, str] | None = None, effects: Effects = Effects()) -> Step:
    """A step whose target state is the one :data:`STATE_AFTER_EVENT` names for ``event``."""
    return Step(STATE_AFTER_EVENT[event], event, fields or {}, effects)


_STEP_TARGET = {
    "accept": (frozenset({State.OFFERED}), "accepted"),
    "enroute": (frozenset({State.ACCEPTED, State.DEFERRED}), "en_route"),
    "arrive": (frozenset({State.ACCEPTED, State.EN_ROUTE, State.DEFERRED}), "arrived"),
    "resolve": (frozenset({State.ON_SCENE, State.DEFERRED}), "resolved"),
}
_DEFERRABLE = frozenset({State.ACCEPTED, State.EN_ROUTE, State.ON_SCENE, State.DEFERRED})
_DISPUTABLE = HELD
RULINGS = ("uphold", "reassign")
CANCEL_REASONS = ("duplicate", "withdrawn", "unfounded")  # the center's
LEAD_CLOSED = "lead_closed"  # the system's: an assist item ends with the request it assisted
_NO_SQUAD = {"squad": "", "assignment": ""}


def transition(request: RequestView, event: Event) -> Step:
    """The step ``event`` makes from ``request``; raises InvalidTransition if it is illegal."""
    match event:
        case Triaged(route="linkage"):
            _require(request, {State.RECEIVED}, "triage")
            return _step("queued", {"route": "linkage"}, Effects(requeue=True, opens=True))
        case Triaged(route=route):
            _require(request, {State.RECEIVED}, "triage")
            return _step("transferred", {"route": route}, Effects(notify_citizen=True))
        case Offered(squad=squad, assignment=assignment):
            _require(request, {State.QUEUED}, "offer")
            fields = {"assignment": assignment} | ({"squad": squad} if squad else {})
            return _step("offered", fields, Effects(dequeue=True))
        case OfferExpired(assignment=assignment, reason=reason):
            _require_assignment(request, assignment)
            _require(request, {State.OFFERED}, "expire offer")
            return _step(
                "offer_expired",
                dict(_NO_SQUAD),
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
            return _step("deferred", fields, Effects(notify_citizen=True))
        case Disputed(assignment=assignment, reason=reason):
            _require_assignment(request, assignment)
            _require(request, _DISPUTABLE, "dispute")
            # The disputing squad is remembered: if the center upholds, it is offered first.
            return _step(
                "disputed",
                {"dispute_reason": reason, "disputed_by": request.squad, **_NO_SQUAD},
                Effects(
                    release_squad=True,
                    cancel_offer_timer=request.state is State.OFFERED,
                    squad_available=True,
                ),
            )
        case Ruled(decision=decision, unit=unit, category=category, assist=assist):
            return _ruling(request, decision, unit, category, assist)
        case Cancelled(reason=reason, duplicate_of=duplicate_of):
            return _cancel(request, reason, duplicate_of)
        case Reopened(resolve_by=resolve_by):
            _require(request, {State.RESOLVED}, "reopen")
            return _step(
                "reopened",
                {"resolve_by": repr(resolve_by), "result": "", **_NO_SQUAD},
                Effects(requeue=True, opens=True),
            )
    raise InvalidTransition(f"unknown event {event!r}")


def _squad_step(request: RequestView, kind: str, assignment: str, note: str) -> Step:
    _require_assignment(request, assignment)
    if kind not in _STEP_TARGET:
        raise InvalidTransition(f"unknown step {kind!r}")
    allowed, event = _STEP_TARGET[kind]
    _require(request, allowed, kind)
    if kind == "accept":
        return _step(event, effects=Effects(cancel_offer_timer=True, notify_citizen=True))
    if kind == "resolve":
        return _step(
            event,
            {"result": note},
            Effects(release_squad=True, notify_citizen=True, squad_available=True, closes=True),
        )
    return _step(event, effects=Effects(notify_citizen=True))


def _ruling(
    request: RequestView, decision: str, unit: str, category: str, assist: tuple[str, ...]
) -> Step:
    if decision not in RULINGS:
        raise InvalidTransition(f"unknown ruling {decision!r} (one of: {', '.join(RULINGS)})")
    _require(request, {State.DISPUTED}, "rule on")
    if decision == "uphold":
        if assist:
            raise InvalidTransition("assisting units come with a reassignment")
        return _step("upheld", effects=Effects(requeue=True))
    if not unit:
        raise InvalidTransition("a reassignment names the unit with jurisdiction")
    if unit in assist:
        raise InvalidTransition("the unit with jurisdiction does not assist itself")
    fields = {"unit": unit} | ({"category": category} if category else {})
    fields |= {"assist": ",".join(assist)} if assist else {}
    return _step("reassigned", fields, Effects(requeue=True, move_to_unit=unit))


def leaving(step: Step) -> Step:
    """The part of a step with ``move_to_unit`` carried out in the unit the request leaves:
    it leaves that unit's queue and open requests (the unit it moves to queues and opens it).
    Keys are per unit (one Cluster slot each), so a move is two writes, one per unit."""
    if not step.effects.move_to_unit:
        raise ValueError(f"step {step.event} moves no request")
    return Step(step.state, step.event, step.fields, Effects(dequeue=True, closes=True))


def _cancel(request: RequestView, reason: str, duplicate_of: str) -> Step:
    if reason not in (*CANCEL_REASONS, LEAD_CLOSED):
        raise InvalidTransition(f"unknown reason {reason!r} (one of: {', '.join(CANCEL_REASONS)})")
    if (reason == "duplicate") != bool(duplicate_of):
        raise InvalidTransition("duplicate_of names the original exactly when reason=duplicate")
    _require(request, OPEN - {State.RECEIVED}, "cancel")
    held = request.state in HELD
    return _step(
        "cancelled",
        {"cancel_reason": reason, "duplicate_of": duplicate_of, **_NO_SQUAD},
        Effects(
            release_squad=held,
            squad_available=held,
            revoke_reason="cancelled" if held else "",
            cancel_offer_timer=request.state is State.OFFERED,
            dequeue=request.state is State.QUEUED,
            notify_citizen=True,
            closes=True,
        ),
    )


def _require(request: RequestView, allowed: set[State] | frozenset[State], action: str) -> None:
    if request.state not in allowed:
        names = ", ".join(sorted(s.value for s in allowed))
        raise InvalidTransition(
            f"cannot {action} a request that is {request.state.value} (allowed from: {names})",
            request.state,
        )


def _require_assignment(request: RequestView, assignment: str) -> None:
    if not assignment or request.assignment != assignment:
        raise InvalidTransition("the assignment is no longer current for this request")
