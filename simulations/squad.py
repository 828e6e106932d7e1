"""One simulated squad: a phone running the reference client, in a vehicle, with people who
decide as :mod:`simulations.people` planned.

The agent is a thin I/O shell: the plan for each job is drawn up front (pure), the vehicle's
position is a :class:`simulations.movement.Trip` evaluated on the simulated clock, and the
agent only sleeps, sends frames and reacts to the hub's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from dispatch_field import protocol
from dispatch_field.client import CommandRejected, FieldClient, TerminalClose, new_command_id
from server.city import City
from simulations.api import HubApi
from simulations.clock import SimClock
from simulations.movement import LatLon, Trip, kmh_to_mps, street_route
from simulations.people import Behaviour, JobPlan, plan_job

log = logging.getLogger(__name__)

HELD_STATES = ("offered", "accepted", "en_route", "on_scene", "deferred")
MAX_OUTAGE_S = 1800.0  # simulated; bounds how long a queued command may wait


@dataclass(frozen=True, slots=True)
class Seat:
    """A registered squad the simulation drives."""

    id: str
    token: str
    unit: str
    district: str
    depot: LatLon
    name: str = ""


@dataclass
class Tally:
    """What the squads did, for the progress line and the report."""

    offers: int = 0
    offered_requests: set[str] = field(default_factory=set)
    # Jobs held from before this run (a restart of the demo): resumed, not offered in it.
    carried_over: set[str] = field(default_factory=set)
    accepted: int = 0
    arrived_by_command: int = 0
    resolved: int = 0
    revoked: int = 0
    disputes: int = 0
    deferrals: int = 0
    signal_losses: int = 0
    rejected: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "offers": self.offers,
            "offered_requests": len(self.offered_requests),
            "carried_over": len(self.carried_over),
            "accepted": self.accepted,
            "arrived_by_command": self.arrived_by_command,
            "resolved": self.resolved,
            "revoked": self.revoked,
            "disputes": self.disputes,
            "deferrals": self.deferrals,
            "signal_losses": self.signal_losses,
            "rejected": self.rejected,
            "errors": self.errors,
        }


@dataclass(frozen=True, slots=True)
class AgentSetup:
    """What every agent of a run shares."""

    ws_url: str
    clock: SimClock
    city: City
    behaviour: Behaviour
    tally: Tally
    api: HubApi
    pos_interval_s: float = 5.0  # simulated seconds between position fixes
    offer_window_s: float = 60.0  # simulated; the hub's is this divided by the speed


class SquadAgent:
    def __init__(self, seat: Seat, setup: AgentSetup, rng: random.Random) -> None:
        self.seat = seat
        self.setup = setup
        self.clock = setup.clock
        self.rng = rng
        self.client = FieldClient(setup.ws_url, seat.id, seat.token, backoff_s=(0.1, 3.0))
        self.trip = Trip.staying(seat.depot, 0.0)
        self._vehicle = asyncio.Lock()  # one job on the road at a time
        self._known: set[str] = set()
        self._revoked: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._command_timeout_s = max(120.0, 2 * MAX_OUTAGE_S / self.clock.speed)

    # ---- lifecycle --------------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self.client.connected

    def where(self) -> LatLon:
        return self.trip.position_at(self.clock.now())

    async def start(self, *, resume: bool = False) -> None:
        """Connect, go on duty at the depot (or, resuming, where the hub last saw us and with
        the assignments it says we hold), and start reporting positions."""
        held: list[dict[str, Any]] = []
        if resume:
            held = await self._restore()
        await self.client.start()
        await self.client.duty(True)
        await self.client.pos(*self.where())
        self._spawn(self._read_frames())
        self._spawn(self._report_positions())
        for assignment in held:
            await self._resume_job(assignment)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.close()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.setup.tally.errors += 1
            log.warning("%s: %r", self.seat.id, task.exception())

    # ---- frames and positions ---------------------------------------------------------------

    async def _read_frames(self) -> None:
        while True:
            frame = await self.client.frames.get()
            match frame:
                case protocol.Offer():
                    self._on_offer(frame.assignment, frame.request, "offered")
                case protocol.Revoke():
                    self._revoked.add(frame.assignment)
                    self.setup.tally.revoked += 1
                case protocol.Welcome() if self.client.welcomes > 1:
                    await self.client.pos(*self.where())  # back online: be findable at once

    async def _report_positions(self) -> None:
        interval = min(10.0, max(0.2, self.setup.pos_interval_s / self.clock.speed))
        await asyncio.sleep(self.rng.uniform(0, interval))  # spread squads over the interval
        while True:
            if self.client.connected:
                await self.client.pos(*self.where(), acc=round(self.rng.uniform(5, 25), 1))
            await asyncio.sleep(interval)

    def _on_offer(
        self, assignment: str, request: protocol.RequestInfo, state: str, *, carried: bool = False
    ) -> None:
        if assignment in self._known:  # replayed after a reconnect
            return
        self._known.add(assignment)
        if carried:
            self.setup.tally.carried_over.add(request.id)
        else:
            self.setup.tally.offers += 1
            self.setup.tally.offered_requests.add(request.id)
        self._spawn(self._job(assignment, request, state))

    # ---- one job -----------------------------------------------------------------------------

    async def _job(self, assignment: str, request: protocol.RequestInfo, state: str) -> None:
        category = self.setup.city.category(request.category)
        if category is None:
            log.warning("%s: offer of unknown category %s", self.seat.id, request.category)
            return
        plan = plan_job(
            self.rng, category, self.seat.unit, self.setup.behaviour, self.setup.offer_window_s
        )
        try:
            if state == "offered":
                await self.clock.sleep(plan.accept_delay_s)
                if assignment in self._revoked or not await self._step(protocol.Accept, assignment):
                    return  # too slow: the offer went to someone else
                self.setup.tally.accepted += 1
                state = "accepted"
            async with self._vehicle:
                await self._carry_out(assignment, (request.lat, request.lon), plan, state)
                self._head_home()
        except (CommandRejected, TerminalClose, TimeoutError) as exc:
            self.setup.tally.errors += 1
            log.warning("%s: job %s stopped: %s", self.seat.id, assignment, exc)

    async def _carry_out(self, assignment: str, scene: LatLon, plan: JobPlan, state: str) -> None:
        if state == "accepted":
            await self.clock.sleep(plan.enroute_delay_s)
            await self._step(protocol.Enroute, assignment)
            state = "en_route"
        if state == "en_route":
            await self._drive(assignment, scene, plan)
        if plan.dispute_after_s is not None and state != "deferred":
            await self.clock.sleep(plan.dispute_after_s)
            reason = plan.dispute_reason
            if await self._step(protocol.Dispute, assignment, reason=reason):
                self.setup.tally.disputes += 1
            return
        await self._work(assignment, plan, resumed_deferral=state == "deferred")

    async def _drive(self, assignment: str, scene: LatLon, plan: JobPlan) -> None:
        trip = Trip(
            tuple(street_route(self.where(), scene, self.rng)),
            kmh_to_mps(plan.speed_kmh),
            self.clock.now(),
        )
        self.trip = trip
        if plan.signal_loss is not None:
            when = trip.start_t + trip.duration_s * plan.signal_loss.at_fraction
            self._spawn(self._lose_signal(when, plan.signal_loss.duration_s))
        if plan.arrive_by_command:
            await self.clock.sleep_until(trip.time_at_remaining(plan.press_arrive_m))
            await self._arrive(assignment)
            self.setup.tally.arrived_by_command += 1
        # Otherwise the hub notices the arrival from the positions (its geofence).
        await self.clock.sleep_until(trip.end_t)

    async def _work(self, assignment: str, plan: JobPlan, *, resumed_deferral: bool) -> None:
        deferral = plan.deferral
        if resumed_deferral:
            await self.clock.sleep(plan.work_s / 2)
        elif deferral is not None:
            await self.clock.sleep(plan.work_s * deferral.after_fraction)
            until = round(time.time() + self.clock.real_duration(deferral.promise_s), 3)
            if await self._step(protocol.Defer, assignment, until=until, reason=deferral.reason):
                self.setup.tally.deferrals += 1
            await self.clock.sleep(deferral.finish_s)
        else:
            await self.clock.sleep(plan.work_s)
        await self._resolve(assignment, plan.note)

    def _head_home(self) -> None:
        self.trip = Trip(
            tuple(street_route(self.where(), self.seat.depot, self.rng)),
            kmh_to_mps(self.setup.behaviour.speed_median_kmh),
            self.clock.now(),
        )

    # ---- commands ----------------------------------------------------------------------------

    async def _step(self, kind: type[protocol.Command], assignment: str, **fields: Any) -> bool:
        """Send a step stamped with the time it happened; False if the hub refused it.

        While the phone has no signal the command waits in the client and goes out on resume
        with its original time (the hub records the step when it happened)."""
        frame = kind(
            id=new_command_id(self.seat.id),
            at=round(time.time(), 3),
            assignment=assignment,
            **fields,
        )
        try:
            await self.client.command(frame, timeout_s=self._command_timeout_s)
        except CommandRejected as exc:
            self.setup.tally.rejected += 1
            log.debug("%s: %s refused: %s", self.seat.id, frame.__class__.__name__, exc)
            return False
        return True

    async def _arrive(self, assignment: str) -> None:
        # Refused when the hub's geofence already recorded the arrival: nothing to do.
        await self._step(protocol.Arrive, assignment)

    async def _resolve(self, assignment: str, note: str) -> None:
        if await self._step(protocol.Resolve, assignment, note=note):
            self.setup.tally.resolved += 1
            return
        # Not on scene for the hub yet (positions lost on the way): say so, then resolve.
        await self._arrive(assignment)
        if await self._step(protocol.Resolve, assignment, note=note):
            self.setup.tally.resolved += 1

    # ---- losing signal -----------------------------------------------------------------------

    async def _lose_signal(self, at: float, duration_s: float) -> None:
        """At simulated time ``at``, the phone drops off the network for ``duration_s``.

        Reconnection is held back for the outage (``reconnect`` off), then the client starts
        again: it resumes with its ``last_seq`` and sends the commands queued meanwhile.
        """
        await self.clock.sleep_until(at)
        if not self.client.connected:
            return
        self.setup.tally.signal_losses += 1
        self.client.reconnect = False
        await self.client.drop()
        for _ in range(500):  # the client has no public "disconnected" event to await
            if not self.client.connected:
                break
            await asyncio.sleep(0.01)
        await self.clock.sleep(min(duration_s, MAX_OUTAGE_S))
        self.client.reconnect = True
        with contextlib.suppress(TimeoutError):  # the client keeps trying on its own
            await self.client.start()

    # ---- resuming after a restart of the demo ------------------------------------------------

    async def _restore(self) -> list[dict[str, Any]]:
        """Take over where the hub last saw this squad: its position and held assignments."""
        described = await self.setup.api.get_squad(self.seat.id)
        if described is None:
            return []
        position = described.get("position")
        if position:
            self.trip = Trip.staying((position["lat"], position["lon"]), self.clock.now())
        return [a for a in described.get("assignments", []) if a.get("state") in HELD_STATES]

    async def _resume_job(self, assignment: dict[str, Any]) -> None:
        detail = await self.setup.api.get_request(assignment["request"])
        request = protocol.RequestInfo(
            id=detail["id"],
            category=detail["category"],
            description=detail.get("description", ""),
            lat=detail["lat"],
            lon=detail["lon"],
        )
        self._on_offer(assignment["id"], request, assignment["state"], carried=True)
