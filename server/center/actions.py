"""The center's actions on requests: rulings on disputes, cancel, note, reopen, and the
assist items a ruling orders; plus the list of disputes waiting for a ruling.

Each action reads the request, asks :mod:`server.lifecycle` for the step, commits it with
:meth:`server.store.requests.RequestStore.commit` (compare-and-set on the version, retried when
the request moved on meanwhile), then carries out what is not part of the atomic commit:
the revoke frame to the squad, the unit's queue, dispatching, the citizen. Every event
records who acted (``by``) and why (``note``, ``reason``). Nothing is written when an action
is refused.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server import ids
from server.actions import HasCity
from server.assign.dispatcher import Dispatcher, Push
from server.center.moves import Mover, unfinished_move
from server.center.rules import RulingRefused, candidate_units, check_reassignment
from server.citizen.teller import CitizenTeller
from server.lifecycle import (
    HELD,
    LEAD_CLOSED,
    Cancelled,
    Event,
    InvalidTransition,
    Reopened,
    RequestView,
    Ruled,
    State,
    Step,
    Triaged,
    leaving,
    transition,
)
from server.store import keys
from server.store.requests import (
    Actor,
    Commit,
    KeptChanging,
    RequestRecord,
    RequestStore,
    StaleRequest,
    compare_and_set,
    event_json,
)

log = logging.getLogger(__name__)

SYSTEM = Actor("system", "center")
RETRIES = 8  # compare-and-set attempts against concurrent steps on the same request


class CenterError(Exception):
    """A refused action: HTTP ``status``, ``code``, the offending ``fields``, for a
    request in the wrong state its current ``state``, and for a ruling the city refused the
    codes it is about (``refused``: unit, category, district, holder)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: dict[str, str] | None = None,
        state: State | None = None,
        refused: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fields = fields or {}
        self.state = state
        self.refused = refused or {}


def _not_found(request_id: str) -> CenterError:
    return CenterError(404, "not_found", f"no request {request_id}")


def _refused(exc: RulingRefused) -> CenterError:
    return CenterError(422, exc.code, exc.message, {exc.field: exc.message}, refused=exc.names)


@dataclass(frozen=True, slots=True)
class Done:
    """A committed step: the unit it was committed in, the request before it, the step."""

    unit: str
    before: RequestRecord
    step: Step
    commit: Commit


class CenterActions:
    def __init__(
        self,
        requests: RequestStore,
        mover: Mover,
        dispatcher: Dispatcher,
        push: Push,
        drain_soon: Callable[[str], None],
        cities: HasCity,
        citizen: CitizenTeller,
        time_scale: float = 1.0,
    ) -> None:
        """``push``: the hub's push of a numbered frame already in a squad's outbox;
        ``drain_soon``: move a unit's queue in the background (a squad's capacity came
        free); ``time_scale``: DISPATCH_TIME_SCALE (multiplies category limits)."""
        self._requests = requests
        self._mover = mover
        self._dispatcher = dispatcher
        self._push = push
        self._drain_soon = drain_soon
        self._cities = cities
        self._citizen = citizen
        self._time_scale = time_scale

    # ---- reading ----------------------------------------------------------------------------

    async def current(self, request_id: str, actor: Actor) -> tuple[str, RequestRecord]:
        """(unit, request) as it stands; finishes a move a crash interrupted first (see
        :mod:`server.center.moves`). Raises CenterError 404."""
        unit = await self._requests.unit_of(request_id)
        record = await self._requests.read(unit, request_id) if unit else None
        if unit is None or record is None:
            raise _not_found(request_id)
        if unfinished_move(unit, record) and unit != keys.NO_UNIT:
            unit = await self._finish_move(unit, request_id, actor)
            record = await self._requests.read(unit, request_id)
            if record is None:
                raise _not_found(request_id)
        return unit, record

    async def disputes(self, units: list[str]) -> list[dict[str, Any]]:
        """Disputed requests of ``units``, oldest dispute first, with the units that could
        take each one."""
        city = self._cities.city
        found: list[dict[str, Any]] = []
        for unit in units:
            for item in await self._requests.open_requests(unit):
                if item.get("state") != State.DISPUTED:
                    continue
                record = await self._requests.read(unit, item["id"])
                if record is None or record.state is not State.DISPUTED:
                    continue
                timeline = await self._requests.timeline(unit, record.id)
                dispute: dict[str, Any] = next(
                    (e for e in reversed(timeline) if e["type"] == "disputed"), {}
                )
                found.append(
                    {
                        "id": record.id,
                        "unit": unit,
                        "category": record.category,
                        "district": record.district,
                        "received_at": record.received_at,
                        "deadlines": {
                            "accept_by": record.accept_by,
                            "arrive_by": record.arrive_by,
                            "resolve_by": record.resolve_by,
                        },
                        "reason": record.dispute_reason,
                        "squad": record.disputed_by or dispute.get("squad"),
                        "disputed_at": dispute.get("at"),
                        "candidates": candidate_units(city, record.district, unit),
                    }
                )
        return sorted(found, key=lambda d: (d["disputed_at"] or 0.0, d["id"]))

    # ---- rulings ----------------------------------------------------------------------------

    async def uphold(self, request_id: str, note: str, actor: Actor) -> dict[str, Any]:
        """The unit keeps the request: back to its queue, offered first to the squad that
        disputed it (if it is free now; otherwise to the nearest, as ever)."""
        done = await self._commit(
            request_id,
            actor,
            lambda r: Ruled("uphold"),
            lambda r: {"note": note, "disputed_by": r.disputed_by},
        )
        # The step requeued it (a crash here leaves it to the queue sweep); a drain of the unit
        # running this very moment could offer it to another squad first, which is fine.
        await self._dispatcher.dispatch(done.unit, request_id, prefer=done.before.disputed_by)
        return await self.describe(request_id, actor)

    async def reassign(
        self,
        request_id: str,
        unit: str,
        category: str | None,
        assist: list[str],
        note: str,
        actor: Actor,
    ) -> dict[str, Any]:
        """Move the request to ``unit`` (the unit with jurisdiction for ``category`` in its
        district), with ``assist`` units' squads helping; see :mod:`server.center.moves`."""
        city = self._cities.city
        stored = await self._requests.unit_of(request_id)
        record = await self._requests.read(stored, request_id) if stored else None
        if stored and record and unfinished_move(stored, record) == unit:
            # This very ruling, retried after a crash in the middle of its move: finish it.
            await self._finish_move(stored, request_id, actor)
            return await self.describe(request_id, actor)

        def ruled(record: RequestRecord) -> Event:
            # The state first: a ruling on a request that is not disputed is a 409 whatever
            # else is wrong with it.
            transition(record.view(), Ruled("reassign", unit="-"))
            allowed = check_reassignment(
                city,
                current_unit=record.unit,
                district=record.district,
                category=record.category,
                unit=unit,
                new_category=category,
                assist=assist,
            )
            return Ruled("reassign", allowed.unit, allowed.category, allowed.assist)

        done = await self._commit(
            request_id,
            actor,
            ruled,
            lambda r: {
                "note": note,
                "unit": unit,
                "from_unit": r.unit,
                "category": category if category != r.category else None,
                "assist": assist or None,
            },
        )
        await self._finish_move(done.unit, request_id, actor)
        return await self.describe(request_id, actor)

    async def _finish_move(self, from_unit: str, request_id: str, actor: Actor) -> str:
        """Steps 2 to 5 of a move (:mod:`server.center.moves`); returns the new unit."""
        moved = await self._mover.receive(from_unit, request_id, actor)
        helpers = [u for u in moved.assist.split(",") if u]
        for helper in helpers:
            await self._open_assist(moved, helper, actor)
        await self._mover.point_index(request_id, moved.unit)
        await self._dispatcher.dispatch(moved.unit, request_id)
        for helper in helpers:
            await self._dispatcher.dispatch(helper, ids.assist_id(request_id, helper))
        return moved.unit

    async def _open_assist(self, lead: RequestRecord, unit: str, actor: Actor) -> None:
        """``unit``'s assist item on ``lead``: a request of its own in that unit, queued
        for any of its squads, carrying the lead's place, caller and deadlines. Created once
        (a second call finds it)."""
        item_id = ids.assist_id(lead.id, unit)
        now = time.time()
        fields = {
            "id": item_id,
            "assist_of": lead.id,
            "category": lead.category,
            "description": lead.description,
            "address": lead.address,
            "caller_phone": lead.caller_phone,
            "lat": repr(lead.lat),
            "lon": repr(lead.lon),
            "district": lead.district,
            "unit": unit,
            # Received when the center ordered it: the ledger knows a request by this moment.
            "received_at": repr(now),
            **{
                name: repr(value)
                for name, value in (
                    ("accept_by", lead.accept_by),
                    ("arrive_by", lead.arrive_by),
                    ("resolve_by", lead.resolve_by),
                )
                if value is not None
            },
        }
        step = transition(RequestView(State.RECEIVED), Triaged("linkage"))
        fields |= step.fields | {"state": step.state.value}
        events = [
            event_json(
                "received",
                item_id,
                now,
                actor,
                category=lead.category,
                unit=unit,
                district=lead.district,
                assist_of=lead.id,
            ),
            event_json(step.event, item_id, now, actor, route="linkage", assist_of=lead.id),
        ]
        with contextlib.suppress(StaleRequest):  # created before (a retried ruling): once
            await self._requests.create(item_id, unit, fields, events, step, received_at=now)

    # ---- cancel, reopen, note -----------------------------------------------------------------

    async def cancel(
        self, request_id: str, reason: str, note: str, duplicate_of: str, actor: Actor
    ) -> dict[str, Any]:
        """Cancel an open request: its squad's offer or assignment is revoked (the squad is
        told, its capacity returns), its assist items end."""
        if duplicate_of:
            if await self._requests.unit_of(request_id) is None:
                raise CenterError(404, "not_found", f"no request {request_id}")
            await self._check_original(request_id, duplicate_of)
        await self._cancel(request_id, reason, note, duplicate_of, actor)
        return await self.describe(request_id, actor)

    async def _check_original(self, request_id: str, duplicate_of: str) -> None:
        """The request a duplicate is cancelled for must be a caller's request that is, or
        was, being handled: the caller is told "a duplicate of a request already taken".
        Not itself, not an assist item (no caller of its own), not one that was cancelled
        or transferred (nobody handles it)."""

        def refuse(code: str, message: str) -> CenterError:
            return CenterError(422, code, message, {"duplicate_of": message})

        if duplicate_of == request_id:
            raise refuse("invalid", "a request is not a duplicate of itself")
        if ids.is_assist_id(duplicate_of):
            raise refuse("invalid", f"{duplicate_of} is an assist item, not a caller's request")
        unit = await self._requests.unit_of(duplicate_of)
        original = await self._requests.read(unit, duplicate_of) if unit else None
        if original is None:
            raise refuse("unknown_request", f"no request {duplicate_of}")
        if original.state in (State.CANCELLED, State.TRANSFERRED):
            raise refuse("invalid", f"{duplicate_of} is {original.state}: nobody handles it")

    async def _cancel(
        self, request_id: str, reason: str, note: str, duplicate_of: str, actor: Actor
    ) -> None:
        done = await self._commit(
            request_id,
            actor,
            lambda r: Cancelled(reason, duplicate_of),
            lambda r: {
                "reason": reason,
                "note": note,
                "duplicate_of": duplicate_of,
                "squad": r.squad if r.state in HELD else None,
                "assignment": r.assignment if r.state in HELD else None,
            },
        )
        before, commit = done.before, done.commit
        if commit.revoke_seq:
            await self._push(
                done.unit, before.squad, commit.revoke_seq, commit.revoke_body, commit.hub
            )
        if done.step.effects.squad_available:
            self._drain_soon(done.unit)
        if done.step.effects.notify_citizen:
            await self.tell_citizen(
                done.unit, before, done.step.event, note, reason, done.commit.version
            )
        await self.lead_closed(done.unit, before)

    async def reopen(self, request_id: str, note: str, actor: Actor) -> dict[str, Any]:
        """A resolved request goes back to its unit's queue with a new resolution deadline
        (now + its category's resolve limit), and is dispatched."""
        city = self._cities.city

        def reopened(record: RequestRecord) -> Event:
            category = city.category(record.category)
            limit = category.limits.resolve_s if category else 0.0
            return Reopened(resolve_by=time.time() + limit * self._time_scale)

        done = await self._commit(
            request_id,
            actor,
            reopened,
            lambda r: {"note": note},
            extra_after=lambda step: {"resolve_by": float(step.fields["resolve_by"])},
        )
        await self._dispatcher.dispatch(done.unit, request_id)
        return await self.describe(request_id, actor)

    async def note(self, request_id: str, note: str, actor: Actor) -> dict[str, Any]:
        """A note in the request's timeline and its unit's event stream; no state change."""
        unit, record = await self.current(request_id, actor)
        await self._requests.note(
            unit,
            request_id,
            event_json("note", request_id, time.time(), actor, note=note, state=record.state.value),
        )
        return await self.describe(request_id, actor)

    # ---- assist items end with their lead -----------------------------------------------------

    async def lead_closed(self, unit: str, lead: RequestRecord) -> None:
        """``lead`` was resolved or cancelled: its assist items still open end (cancelled
        with reason ``lead_closed``, their squads' offers or assignments revoked). Returns
        at once for a request without assisting units."""
        for helper in (u for u in lead.assist.split(",") if u):
            item_id = ids.assist_id(lead.id, helper)
            try:
                await self._cancel(item_id, LEAD_CLOSED, f"{lead.id} closed", "", SYSTEM)
            except CenterError as exc:
                if exc.status not in (404, 409):  # 409: it ended before its lead; fine
                    raise

    # ---- the citizen --------------------------------------------------------------------------

    async def tell_citizen(
        self, unit: str, record: RequestRecord, event: str, note: str, reason: str, version: int
    ) -> None:
        """Queue the caller's message of a center step (through the citizen outbox, keyed by
        the request's version after the step: a retry queues it once). Assist items have no
        caller of their own."""
        if record.assist_of:
            return
        try:
            message = self._citizen.step(
                unit, record.field_view(), event, f"v{version}", note=note, reason=reason
            )
        except (OverflowError, OSError, ValueError):
            log.exception("the message of %s on %s could not be composed", event, record.id)
            return
        await self._citizen.queue(message)

    # ---- the one commit loop ------------------------------------------------------------------

    async def _commit(
        self,
        request_id: str,
        actor: Actor,
        event_for: Callable[[RequestRecord], Event],
        extra: Callable[[RequestRecord], dict[str, Any]],
        extra_after: Callable[[Step], dict[str, Any]] | None = None,
    ) -> Done:
        """Read the request, decide its step (``event_for`` may raise RulingRefused), record
        the event with ``extra`` (and ``extra_after`` of the step), commit; retry when the
        request moved on meanwhile. Raises CenterError: 404, 409 with the state, 422."""

        async def attempt() -> Done:
            unit, record = await self.current(request_id, actor)
            try:
                step = transition(record.view(), event_for(record))
            except InvalidTransition as exc:
                raise CenterError(409, "invalid_state", str(exc), state=exc.state) from None
            except RulingRefused as exc:
                raise _refused(exc) from None
            now = time.time()
            payload = extra(record) | (extra_after(step) if extra_after else {})
            event = event_json(step.event, request_id, now, actor, **payload)
            held = record.state in HELD
            commit = await self._requests.commit(  # StaleRequest: moved on, attempt again
                unit,
                request_id,
                record.v,
                leaving(step) if step.effects.move_to_unit else step,
                [event],
                assignment=record.assignment if held else "",
                squad=record.squad if held else "",
                queue_score=record.received_at,
            )
            return Done(unit, record, step, commit)

        try:
            return await compare_and_set(attempt, RETRIES)
        except KeptChanging:
            raise CenterError(503, "busy", "the request kept changing: retry") from None

    async def describe(self, request_id: str, actor: Actor) -> dict[str, Any]:
        """What the center's actions answer: the request's state now."""
        unit, record = await self.current(request_id, actor)
        shown = {
            "id": record.id,
            "unit": unit,
            "state": record.state.value,
            "category": record.category,
            "squad": record.squad if record.state in HELD else None,
            "assignment": record.assignment if record.state in HELD else None,
            "resolve_by": record.resolve_by,
            "assist": [u for u in record.assist.split(",") if u] or None,
            "assist_of": record.assist_of or None,
        }
        return {k: v for k, v in shown.items() if v is not None}
