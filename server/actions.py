"""The operations users perform: a call-taker records a request, a squad reports a step.

Both are thin: they validate against the city and the clock, ask the pure state machine for
the step, commit it through :class:`server.store.requests.RequestStore`, then carry out what cannot
be part of the atomic commit (pushes, citizen notifications, moving the queue).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

import msgspec
from msgspec import Meta
from redis.asyncio import Redis

from dispatch_field import protocol
from dispatch_field.codes import ErrorCode
from server.assign.dispatcher import Dispatcher, Outcome
from server.citizen.compose import Message, command_discriminator
from server.citizen.teller import CitizenTeller
from server.city import City
from server.known import KnownRequests, after_step
from server.lifecycle import (
    Deferred,
    Disputed,
    Event,
    InvalidTransition,
    RequestView,
    SquadStep,
    State,
    Triaged,
    transition,
)
from server.metrics import Metrics
from server.settings import Settings
from server.store import keys
from server.store.requests import (
    UNKNOWN_COMMAND,
    Actor,
    DuplicateCommand,
    ForeignAssignment,
    KeptChanging,
    RequestRecord,
    RequestStore,
    StaleRequest,
    compare_and_set,
    event_json,
)
from server.store.text import text

log = logging.getLogger(__name__)


class NewRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /api/v1/requests``."""

    caller_phone: Annotated[str, Meta(pattern=r"^\+?[0-9]{3,20}$")]
    category: Annotated[str, Meta(min_length=1, max_length=64)]
    description: Annotated[str, Meta(min_length=1, max_length=2000)]
    lat: protocol.Lat  # within Redis GEO's range, as every position the hub stores
    lon: Annotated[float, Meta(ge=-180.0, le=180.0)]
    address: Annotated[str, Meta(max_length=500)] = ""
    lang: Literal["zh", "en"] = "zh"  # the caller's language: what the messages to them use

    def fingerprint(self) -> str:
        """A hash of the request's content, the same whatever the JSON's spacing, key order
        or spelling of numbers: what an ``Idempotency-Key`` is bound to."""
        return hashlib.sha256(msgspec.json.encode(self)).hexdigest()


class Located(Protocol):
    """What triage reads of a request: a :class:`NewRequest`, or the intake console's
    preview of one (``POST /api/v1/requests/preview``), which runs the same triage."""

    @property
    def category(self) -> str: ...

    @property
    def lat(self) -> float: ...

    @property
    def lon(self) -> float: ...


class HasCity(Protocol):
    """The current city (units may be added while the hub runs)."""

    @property
    def city(self) -> City: ...


class IntakeError(Exception):
    """Refused intake: ``code`` and the offending ``fields`` (name -> reason)."""

    def __init__(self, code: str, message: str, fields: dict[str, str]) -> None:
        super().__init__(message)
        self.code, self.message, self.fields = code, message, fields


class CommandError(Exception):
    """Refused squad command, answered with an ``error`` frame."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


# How far the hub's view of a moment may be off in the bounds below (rounding, the delay of
# the position that gave the phone's clock offset).
WINDOW_TOLERANCE_S = 2.0


@dataclass(slots=True)
class StepWindow:
    """What the hub knows of a squad's connection, to place its steps in time: when the
    connection began, when the squad's previous one ended (if it was offline until this one),
    and the phone's clock offset (hub time minus phone time, the least seen in its positions
    on this connection: None until one came)."""

    connected_at: float
    offline_since: float | None = None
    offset: float | None = None

    def saw_position(self, phone_ts: float, now: float) -> None:
        offset = now - phone_ts
        if self.offset is None or offset < self.offset:
            self.offset = offset


def step_time(
    at: float,
    now: float,
    window: StepWindow,
    *,
    delay_max_s: float,
    skew_s: float,
    offline_after_s: float,
) -> float:
    """When a step the phone dated ``at`` (its clock) counts, on the hub's clock: ``at``
    moved by the phone's clock offset (read from its positions, believed within
    ``skew_s``), if the hub can vouch that the step can have been taken then; else ``now``,
    when the hub learnt of it.

    What the hub can vouch for: a step taken on this connection is sent at once, so it is at
    most ``delay_max_s`` old. In a connection's first ``delay_max_s`` it may also be a step
    the phone held while offline, taken after its previous connection was last heard from:
    no earlier than that connection's end (or, if it was still open at the hello, than the
    hello) less ``offline_after_s``, the time the hub takes to notice a silent phone. So no
    clock a phone claims, in its positions or its steps, dates a step earlier than that."""
    offset = 0.0 if window.offset is None else max(-skew_s, min(skew_s, window.offset))
    hub_at = min(at + offset, now)
    earliest = now - delay_max_s - WINDOW_TOLERANCE_S
    if now - window.connected_at <= delay_max_s + WINDOW_TOLERANCE_S:
        ended = window.connected_at if window.offline_since is None else window.offline_since
        earliest = min(earliest, ended - offline_after_s - WINDOW_TOLERANCE_S)
    return hub_at if hub_at >= earliest else now


@dataclass(frozen=True, slots=True)
class CommandDone:
    request_id: str
    state: State
    squad_available: bool  # capacity came free and requests wait: the unit's queue may move
    record: RequestRecord | None = None  # the request after the step (None: not known here)


class Intake:
    def __init__(
        self,
        cities: HasCity,
        requests: RequestStore,
        dispatcher: Dispatcher,
        citizen: CitizenTeller | None = None,
        time_scale: float = 1.0,
        metrics: Metrics | None = None,
    ) -> None:
        """``citizen``: tells the caller their request's number (None: nobody is told)."""
        self._metrics = metrics or Metrics()
        self._cities = cities
        self._requests = requests
        self._dispatcher = dispatcher
        self._citizen = citizen
        self._time_scale = time_scale  # multiplies every category limit (DISPATCH_TIME_SCALE)

    @property
    def _city(self) -> City:
        return self._cities.city

    def triage(self, new: Located) -> tuple[str, str, str]:
        """(route, district, unit) for a request; pure. Raises IntakeError."""
        category = self._city.category(new.category)
        if category is None:
            raise IntakeError(
                "unknown_category",
                f"no category {new.category!r}",
                {"category": "unknown category"},
            )
        district = self._city.district_at(new.lat, new.lon)
        if category.route != "linkage":
            return category.route, district.code if district else "", keys.NO_UNIT
        if district is None:
            reason = "outside the city's districts"
            raise IntakeError(
                "outside_city", "the location is outside the city", {"lat": reason, "lon": reason}
            )
        unit = self._city.unit_for(category.code, district.code)
        if unit is None:
            raise IntakeError(
                "no_unit",
                f"no unit handles {category.code} in {district.code}",
                {"category": f"not handled in district {district.code}"},
            )
        return "linkage", district.code, unit.code

    async def create(
        self, new: NewRequest, by: Actor, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Record and dispatch a request. With ``idempotency_key``, a retry of the same call
        returns the request the first call made (with ``"replayed": True``), never a twin.

        The key is the caller's own (scoped to ``by``) and bound to the request's content:
        the same key with a different request raises IdempotencyKeyReused, records nothing.
        """
        arrived = time.perf_counter()
        if not new.description.strip():
            raise IntakeError(
                "invalid", "the description is blank", {"description": "must say what is wrong"}
            )
        route, district, unit = self.triage(new)  # bad input never takes an id
        category = self._city.category(new.category)
        assert category is not None  # triage checked it
        request_id, exists = await self._requests.reserve_id(
            by.label(), idempotency_key, new.fingerprint()
        )
        if exists:
            return await self._replayed(request_id)
        now = time.time()
        limits = category.limits
        fields = {
            "id": request_id,
            "category": new.category,
            "description": new.description,
            "lat": repr(new.lat),
            "lon": repr(new.lon),
            "address": new.address,
            "caller_phone": new.caller_phone,
            "lang": new.lang,
            "district": district,
            "unit": unit,
            "route": route,
            "received_at": repr(now),
            "state": State.RECEIVED.value,
        }
        if route == "linkage":
            scale = self._time_scale  # the citizen's clock runs from intake
            fields |= {
                "accept_by": repr(now + limits.accept_s * scale),
                "arrive_by": repr(now + limits.arrive_s * scale),
                "resolve_by": repr(now + limits.resolve_s * scale),
            }
        step = transition(RequestView(State.RECEIVED), Triaged(route))
        fields |= step.fields | {"state": step.state.value}
        events = [
            event_json(
                "received", request_id, now, by, category=new.category, unit=unit, district=district
            ),
            event_json(step.event, request_id, now, by, route=route),
        ]
        record = RequestRecord.from_hash(fields | {"v": "1"})  # as the create leaves it
        # The first offer goes in the same round trip as the create, after it.
        first = (
            self._dispatcher.first_offer(unit, request_id, record)
            if step.state is State.QUEUED
            else None
        )
        try:
            answer = await self._requests.create(
                request_id,
                unit,
                fields,
                events,
                step,
                received_at=now,
                # Told in the same script that stores the request: the number comes first,
                # and no crash can store the request without its message.
                messages=self._citizen.intake_messages(unit, fields) if self._citizen else (),
                then=first.call if first else None,
            )
        except StaleRequest as stale:
            if first is not None and stale.then is not None:  # it offered the stored one
                await self._dispatcher.finish_first_offer(first, stale.then)
            if idempotency_key is None:
                raise
            return await self._replayed(request_id)  # a concurrent retry
        response: dict[str, Any] = {
            "id": request_id,
            "state": step.state.value,
            "route": route,
            "unit": unit if route == "linkage" else None,
            "district": district or None,
        }
        if first is not None:
            result = await self._dispatcher.finish_first_offer(first, answer)
            if result.squad:
                self._metrics.intake_to_offer.observe(time.perf_counter() - arrived)
                response |= {
                    "state": State.OFFERED.value,
                    "squad": result.squad,
                    "assignment": result.assignment,
                }
            elif result.outcome is Outcome.NOT_QUEUED:
                # Another dispatcher (a queue sweep) moved it first: answer what it is now.
                current = await self._requests.read(unit, request_id)
                if current is not None:
                    moved = {
                        "state": current.state.value,
                        "squad": current.squad,
                        "assignment": current.assignment,
                    }
                    response |= {k: v for k, v in moved.items() if v}
        return response

    async def _replayed(self, request_id: str) -> dict[str, Any]:
        """The answer to a retried intake; the caller is told (once) if the first try could
        not get that far."""
        if self._citizen is not None:
            unit = await self._requests.unit_of(request_id) or keys.NO_UNIT
            record = await self._requests.read(unit, request_id)
            if record is not None:
                await self._citizen.intake(unit, record.as_fields())
        return await self.describe(request_id) | {"replayed": True}

    async def describe(self, request_id: str) -> dict[str, Any]:
        """What intake answers about a stored request."""
        unit = await self._requests.unit_of(request_id) or keys.NO_UNIT
        record = await self._requests.read(unit, request_id)
        shown = ("id", "state", "route", "district", "squad", "assignment")
        stored = msgspec.structs.asdict(record) if record else {}
        result: dict[str, Any] = {k: str(stored[k]) for k in shown if stored.get(k)}
        result["unit"] = None if unit == keys.NO_UNIT else unit
        return result


def command_event(command: protocol.Command) -> Event:
    match command:
        case protocol.Accept() | protocol.Enroute() | protocol.Arrive():
            return SquadStep(command.__struct_config__.tag, command.assignment)  # type: ignore[arg-type]
        case protocol.Resolve():
            return SquadStep("resolve", command.assignment, command.note)
        case protocol.Defer():
            return Deferred(command.assignment, command.until, command.reason)
        case protocol.Dispute():
            return Disputed(command.assignment, command.reason)
    raise TypeError(command)


# on_closed(unit, request as it was before the step): a step closed the request.
ClosedHook = Callable[[str, RequestRecord], Awaitable[None]]


class SquadActions:
    """Steps reported by squads (and the automatic arrival), applied idempotently."""

    def __init__(
        self,
        redis: Redis,
        requests: RequestStore,
        citizen: CitizenTeller,
        settings: Settings,
        on_closed: ClosedHook | None = None,
        *,
        cities: HasCity | None = None,
        known: KnownRequests | None = None,
    ) -> None:
        """``on_closed``: called after a step that closed a request (the center ends the
        request's assist items); a failure there is logged, the step stands. ``cities``: the
        city whose categories cap a promise (None: only the horizon). ``known``: the records
        this process wrote last (shared with the dispatcher, which fills in its offers)."""
        self._redis = redis
        self._requests = requests
        self._citizen = citizen
        self._settings = settings
        self._on_closed = on_closed
        self._cities = cities
        self.known = known if known is not None else KnownRequests()

    async def apply(
        self,
        unit: str,
        squad: str,
        command: protocol.Command,
        actor: Actor | None = None,
        *,
        ack: int = 0,
        window: StepWindow | None = None,
    ) -> CommandDone:
        """Apply a squad's command. Raises CommandError; a retried id is a success.
        ``window``: the squad's connection, which places a phone's ``at`` on the hub's clock
        within what the hub can vouch for (:func:`step_time`).

        One round trip when this process knows the request (it made the offer or the last
        step): the step is computed from that record and committed with its version, the
        squad's ownership of the assignment checked by the same script. ``ack``: the squad's
        cumulative acknowledgement to record with it (0: none)."""
        now = time.time()
        event = command_event(command)
        assignment = command.assignment
        record = self.known.get(unit, squad, assignment)
        fresh = record is None

        async def attempt() -> CommandDone:
            nonlocal record, fresh, ack
            if record is None:
                record = await self._read_owned(unit, squad, assignment)
                fresh = True
            request_id, view = record.id, record.view()
            at = self._event_time(command, record, now, window if actor is None else None)
            try:
                step = transition(view, event)
            except InvalidTransition as exc:
                if not fresh:  # what this process knew may be out of date: look again
                    record = None
                    raise StaleRequest(request_id) from None
                self.known.forget(unit, squad, assignment)  # read fresh next time too
                first = await self._seen(unit, squad, command.id)
                if first is not None:
                    _check_retry(command, first)
                    await self._retell(unit, request_id, squad, command)
                    return CommandDone(request_id, view.state, False)
                raise CommandError(ErrorCode.INVALID_TRANSITION, str(exc)) from None
            # Everything the step needs is prepared before it is committed: nothing after the
            # commit may fail on the command's content and leave a step without its ``ok``.
            message = (
                self._message(unit, record, step.event, squad, command)
                if step.effects.notify_citizen
                else None
            )
            recorded = event_json(
                step.event,
                request_id,
                at,
                actor or Actor("squad", squad),
                assignment=assignment,
                squad=squad,
                note=getattr(command, "note", ""),
                reason=getattr(command, "reason", ""),
                until=getattr(command, "until", None),
                received=round(now, 3) if at != now else None,
            )
            acked, ack = ack, 0  # recorded by the first call, whatever its outcome
            try:
                commit = await self._requests.commit(
                    unit,
                    request_id,
                    record.v,
                    step,
                    [recorded],
                    assignment=assignment,
                    squad=squad,
                    command_id=command.id,
                    command_what=_what(command),
                    at=at,
                    owner_check=True,
                    ack=acked,
                    messages=[self._citizen.outbox.prepare(message)] if message else (),
                )
            except ForeignAssignment:
                self.known.forget(unit, squad, assignment)
                raise _not_owned(assignment) from None
            except DuplicateCommand as exc:
                _check_retry(command, exc.first)
                await self._retell(unit, request_id, squad, command)
                return CommandDone(request_id, view.state, False)
            except StaleRequest:
                record = None
                raise
            updated = after_step(record, step, commit.version, at)
            if step.effects.release_squad or updated.assignment != assignment:
                self.known.forget(unit, squad, assignment)
            else:
                self.known.remember(unit, squad, assignment, updated)
            if step.effects.closes and self._on_closed is not None:
                try:
                    await self._on_closed(unit, record)
                except Exception:  # noqa: BLE001 - the squad's step is committed regardless
                    log.exception("after %s closed: the closing hook failed", request_id)
            available = step.effects.squad_available and commit.queued != 0
            return CommandDone(request_id, step.state, available, updated)

        try:
            return await compare_and_set(attempt, 8)
        except KeptChanging:
            raise CommandError(
                ErrorCode.BUSY, "the request kept changing: retry with the same id"
            ) from None

    async def _read_owned(self, unit: str, squad: str, assignment: str) -> RequestRecord:
        """The request behind ``assignment``, read from Redis, if the assignment is this
        squad's."""
        request_id = await self._owned_request(unit, squad, assignment)
        record = await self._requests.read(unit, request_id)
        if record is None:
            raise CommandError(ErrorCode.UNKNOWN_ASSIGNMENT, "the request no longer exists")
        return record

    async def _owned_request(self, unit: str, squad: str, assignment: str) -> str:
        """The request behind ``assignment`` if it is this squad's; a squad can only act on
        its own assignments."""
        owner, request_id = await self._redis.hmget(
            keys.assignment(unit, assignment), ["squad", "request"]
        )
        if text(owner) != squad:
            raise _not_owned(assignment)
        return text(request_id)

    def _event_time(
        self,
        command: protocol.Command,
        record: RequestRecord,
        now: float,
        window: StepWindow | None = None,
    ) -> float:
        """When the step happened. A phone's ``at`` counts (an arrival recorded in a tunnel
        counts at its real time) within bounds: not in the future beyond the allowed clock
        skew, not before the request was received; with the squad's connection
        (``window``), on the hub's clock and only as early as the hub can vouch for
        (:func:`step_time`). ``until`` of a promise must be later."""
        settings = self._settings
        at = now if command.at is None else command.at
        if not math.isfinite(at) or at > now + settings.clock_skew_s:
            raise CommandError(ErrorCode.INVALID_TIME, "'at' is in the future")
        if window is not None and command.at is not None:
            at = step_time(
                at,
                now,
                window,
                delay_max_s=settings.step_delay_max_s,
                skew_s=settings.clock_skew_s,
                offline_after_s=settings.offline_after_s,
            )
        at = min(at, now)
        if at < record.received_at:
            raise CommandError(ErrorCode.INVALID_TIME, "'at' is before the request was received")
        # Nor before the request's last step (its offer, first acceptance, first arrival): a
        # step cannot come before the one it follows. Within the clock skew a phone's slow
        # clock is forgiven and the step recorded at that last step's time.
        last = record.last_step_at
        if at < last:
            if at < last - self._settings.clock_skew_s:
                raise CommandError(ErrorCode.INVALID_TIME, "'at' is before the request's last step")
            at = last
        if isinstance(command, protocol.Defer):
            until, horizon = command.until, self._settings.promise_horizon_s
            if not math.isfinite(until) or until <= at:
                raise CommandError(ErrorCode.INVALID_TIME, "'until' must be later than now")
            if until > now + horizon:
                raise CommandError(
                    ErrorCode.INVALID_TIME,
                    f"'until' is more than {horizon / 86400:g} days ahead",
                )
            cap = self._promise_cap_s(record.category)
            if cap is not None and until > now + cap:
                raise CommandError(
                    ErrorCode.INVALID_TIME,
                    f"'until' is past the promise cap of {record.category}: at most "
                    f"{cap:g} s from now",
                )
        return at

    def _promise_cap_s(self, category_code: str) -> float | None:
        """How far ahead a promise on ``category_code`` may be (scaled like every limit)."""
        category = self._cities.city.category(category_code) if self._cities else None
        if category is None:
            return None
        return category.limits.promise_max_s * self._settings.time_scale

    async def _seen(self, unit: str, squad: str, command_id: str) -> str | None:
        """What ``command_id`` stood for when it was applied (see :func:`_what`), or None if
        this squad has not used it (within the command memory)."""
        first = await self._redis.get(keys.command(unit, squad, command_id))
        return None if first is None else text(first)

    def _message(
        self,
        unit: str,
        record: RequestRecord,
        event: str,
        squad: str,
        command: protocol.Command,
    ) -> Message | None:
        """The caller's message for a step, or None. Raises CommandError for a command whose
        content cannot be put in words (a time the calendar cannot show)."""
        try:
            return self._citizen.step(
                unit,
                record.field_view(),
                event,
                command_discriminator(squad, command.id),
                note=getattr(command, "note", "") or getattr(command, "reason", ""),
                until=getattr(command, "until", None),
            )
        except (OverflowError, OSError, ValueError):
            raise CommandError(ErrorCode.INVALID_TIME, "'until' is not a calendar time") from None

    async def _retell(
        self, unit: str, request_id: str, squad: str, command: protocol.Command
    ) -> None:
        """A command applied before is retried: queue its message in case the first try
        stopped between the commit and the queuing (the key makes this a no-op otherwise)."""
        event = _TOLD_BY_COMMAND.get(command.__struct_config__.tag)  # type: ignore[arg-type]
        record = await self._requests.read(unit, request_id) if event else None
        if event is None or record is None:
            return
        try:
            message = self._message(unit, record, event, squad, command)
        except CommandError:
            return
        await self._citizen.queue(message)


def _what(command: protocol.Command) -> str:
    """What a command id stands for, kept with it: the assignment and the command. A retry
    of the same command is answered ``ok`` again; the id reused for another is refused."""
    return f"{command.assignment} {command.__struct_config__.tag}"


def _check_retry(command: protocol.Command, first: str) -> None:
    """Raise CommandError unless ``command`` is a retry of what its id was first used for
    (UNKNOWN_COMMAND: recorded before ids kept what they stood for, taken as a retry)."""
    if first != UNKNOWN_COMMAND and first != _what(command):
        raise CommandError(
            ErrorCode.INVALID,
            f"id {command.id!r} was used for another command: a new command needs a new id",
        )


def _not_owned(assignment: str) -> CommandError:
    return CommandError(
        ErrorCode.UNKNOWN_ASSIGNMENT, f"assignment {assignment!r} is not one of this squad's"
    )


# The lifecycle event of each command that tells the caller (see server.lifecycle).
_TOLD_BY_COMMAND = {
    "accept": "accepted",
    "enroute": "en_route",
    "arrive": "arrived",
    "resolve": "resolved",
    "defer": "deferred",
}
