"""The simulated city: squads of every unit on the road, citizens calling in.

It drives a running hub only through its HTTP API and the reference field client. Run it
against a hub started with its time settings scaled (``DISPATCH_OFFER_WINDOW_S=60/K`` for
``--speed K``; :mod:`simulations.demo` does all of that)::

    python -m simulations.city --url http://127.0.0.1:8000 \\
        --tokens admin:...,calltaker:...,center:...,wall:... --speed 5 --duration 600

At the end (the duration, or Ctrl-C) it writes a report (:mod:`simulations.report`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import httpx

from server.city import City, load_city
from simulations.api import ApiError, HubApi, parse_tokens
from simulations.arrivals import ArrivalProcess, PlannedRequest, plan_request, repeat_of
from simulations.center_desk import Call, CenterDesk
from simulations.clock import SimClock, local_hour_now
from simulations.movement import LatLon, offset_m
from simulations.people import Behaviour
from simulations.run import MadeRequest, Sample, SimRun
from simulations.squad import AgentSetup, Seat, SquadAgent

log = logging.getLogger(__name__)

BASE_OFFER_WINDOW_S = 60.0  # the hub's default, in simulated seconds


def hub_time_settings(speed: float) -> dict[str, str]:
    """DISPATCH_* variables that put the hub on the simulation's clock: the offer window and,
    through the time scale, every category limit and escalation interval."""
    return {
        "DISPATCH_OFFER_WINDOW_S": f"{BASE_OFFER_WINDOW_S / speed:.4g}",
        "DISPATCH_TIME_SCALE": f"{1 / speed:.6g}",
    }


@dataclass(frozen=True)
class SimConfig:
    speed: float = 5.0
    # Calls per simulated hour, averaged over the day. With the demo's 14 squads per unit and
    # jobs of 1-3 hours, about this many keep the busiest units near capacity at the peaks.
    rate_per_hour: float = 24.0
    duration_s: float | None = None  # real seconds; None: until stopped
    seed: int | None = None
    start_hour: float | None = None  # local hour the simulated day starts; None: now
    warm_start: int = 4  # calls already waiting when the run starts (map busy at once)
    districts: tuple[str, ...] | None = None  # restrict calls to these districts
    pos_interval_s: float = 5.0  # simulated seconds between position fixes
    duplicate_share: float = 0.03  # calls repeated by another caller a few minutes later
    center_desk: bool = True  # a simulated center rules on disputes and cancels repeats
    behaviour: Behaviour = field(default_factory=Behaviour)


# ---- squads ----------------------------------------------------------------------------------


GOLDEN_ANGLE = math.pi * (3 - math.sqrt(5))


def parking_spot(depot: LatLon, k: int) -> LatLon:
    """The ``k``-th squad's home near ``depot``: a sunflower spiral a few hundred metres
    across, so squads sharing a depot do not sit on one pixel of the wall map."""
    radius = 180.0 * math.sqrt(k + 1)
    angle = k * GOLDEN_ANGLE
    return offset_m(depot, radius * math.cos(angle), radius * math.sin(angle))


def seat_plan(
    city: City, per_unit_per_district: int, districts: Sequence[str] | None = None
) -> list[tuple[str, str, LatLon, str]]:
    """(unit, district, home, name) of every squad to register: depots taken in turn, each
    squad parked at its own spot around its depot."""
    plan = []
    parked: Counter[LatLon] = Counter()
    placed: Counter[str] = Counter()  # per district: rotate over all its depots
    for unit in city.units:
        for code in unit.districts:
            district = city.district(code)
            if district is None or (districts is not None and code not in districts):
                continue
            for i in range(per_unit_per_district):
                depot = district.depots[placed[code] % len(district.depots)]
                placed[code] += 1
                home = parking_spot(depot, parked[depot])
                parked[depot] += 1
                plan.append((unit.code, code, home, f"{unit.code}-{code}-{i + 1}"))
    return plan


async def register_squads(
    api: HubApi, city: City, per_unit_per_district: int, districts: Sequence[str] | None = None
) -> list[Seat]:
    """Register squads through the API: ``per_unit_per_district`` per unit and district."""
    seats = []
    for unit, district, depot, name in seat_plan(city, per_unit_per_district, districts):
        created = await api.create_squad(unit, name)
        seats.append(Seat(created["id"], created["token"], unit, district, depot, name))
    return seats


# ---- the run ---------------------------------------------------------------------------------


class Simulation:
    def __init__(
        self,
        api: HubApi,
        city: City,
        seats: Sequence[Seat],
        config: SimConfig,
        *,
        progress: TextIO | None = sys.stderr,
        resume: bool = False,
    ) -> None:
        self.api = api
        self.city = city
        self.seats = list(seats)
        self.config = config
        self.progress = progress
        self.resume = resume
        self.rng = random.Random(config.seed)
        start_hour = config.start_hour
        if start_hour is None:
            start_hour = local_hour_now(city.timezone)
        self.clock = SimClock(config.speed, start_hour)
        self.run_info = SimRun(
            config.speed, config.rate_per_hour, config.seed, start_hour, squads=len(self.seats)
        )
        self._posts: set[asyncio.Task[None]] = set()  # calls under way
        self._later: set[asyncio.Task[None]] = set()  # calls planned for later
        setup = AgentSetup(
            ws_url=api.ws_url,
            clock=self.clock,
            city=city,
            behaviour=config.behaviour,
            tally=self.run_info.tally,
            api=api,
            pos_interval_s=config.pos_interval_s,
            offer_window_s=BASE_OFFER_WINDOW_S,
        )
        self.agents = [
            SquadAgent(seat, setup, random.Random(self.rng.random())) for seat in self.seats
        ]
        self.desk = (
            CenterDesk(api, city, self.clock, random.Random(self.rng.random()))
            if config.center_desk
            else None
        )

    async def run(self, stop: asyncio.Event | None = None) -> SimRun:
        """Run until ``stop`` is set or the configured duration passes; squads are
        disconnected before it returns, the hub keeps running."""
        stop = stop or asyncio.Event()
        self.run_info.started_at = time.time()
        await self._start_agents()
        tasks = [asyncio.create_task(self._place_calls()), asyncio.create_task(self._watch())]
        if self.desk is not None:
            tasks.append(asyncio.create_task(self.desk.run()))
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.duration_s)
        finally:
            # Calls due later (a repeat caller minutes from now) are not made; calls under way
            # are waited for, so that every request made is in the run's record.
            for task in (*tasks, *self._later):
                task.cancel()
            await asyncio.gather(*tasks, *self._later, return_exceptions=True)
            await asyncio.gather(*self._posts, return_exceptions=True)
            self.run_info.ended_at = time.time()
            await asyncio.gather(*(agent.stop() for agent in self.agents), return_exceptions=True)
            self._finish_progress()
        return self.run_info

    async def _start_agents(self) -> None:
        gate = asyncio.Semaphore(32)  # do not open every socket in the same millisecond

        async def start(agent: SquadAgent) -> None:
            async with gate:
                await agent.start(resume=self.resume)

        await asyncio.gather(*(start(agent) for agent in self.agents))

    # ---- citizens ----------------------------------------------------------------------------

    async def _place_calls(self) -> None:
        for _ in range(self.config.warm_start):
            self._post(plan_request(self.rng, self.city, self.config.districts))
            await asyncio.sleep(0.3)
        process = ArrivalProcess(self.config.rate_per_hour, self.clock.hour_at, self.rng)
        t = self.clock.now()
        while True:
            t = process.next_after(t)
            await self.clock.sleep_until(t)
            planned = plan_request(self.rng, self.city, self.config.districts)
            self._post(planned)
            if self.rng.random() < self.config.duplicate_share:
                self._post_later(repeat_of(planned, self.rng), self.rng.uniform(120, 900))

    def _post_later(self, planned: PlannedRequest, after_sim_s: float) -> None:
        """Another caller reports the same problem a little later. Until then the call is
        only planned: a stop cancels it (at 20× a repeat can be 45 real seconds away)."""

        async def later() -> None:
            await self.clock.sleep(after_sim_s)
            self._post(planned)

        task = asyncio.create_task(later())
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    def _post(self, planned: PlannedRequest) -> None:
        # Each call in its own task: a slow answer must not delay the next call.
        task = asyncio.create_task(self._call_in(planned, self.clock.now()))
        self._posts.add(task)
        task.add_done_callback(self._posts.discard)

    async def _call_in(self, planned: PlannedRequest, sim_t: float) -> None:
        try:
            created = await self.api.create_request(planned)
        except (ApiError, httpx.HTTPError) as exc:
            self.run_info.refused += 1
            log.warning("intake refused %s: %s", planned.category, exc)
            return
        self.run_info.requests.append(
            MadeRequest(
                id=created["id"],
                category=planned.category,
                district=planned.district,
                unit=created.get("unit"),
                route=created["route"],
                sim_t=round(sim_t, 1),
                lat=planned.lat,
                lon=planned.lon,
            )
        )
        if self.desk is not None and created["route"] == "linkage":
            try:
                await self.desk.saw_call(
                    Call(created["id"], planned.category, planned.lat, planned.lon, sim_t)
                )
            except (ApiError, httpx.HTTPError) as exc:
                log.warning("center desk: %s", exc)

    # ---- progress ----------------------------------------------------------------------------

    async def _watch(self) -> None:
        last_print = 0.0
        while True:
            await asyncio.sleep(1.0)
            sample = await self._sample()
            self.run_info.samples.append(sample)
            last_print = self._show(sample, last_print)

    async def _sample(self) -> Sample:
        tally = self.run_info.tally
        waiting = open_ = busy = 0
        try:
            seen = await self.api.live_map()
            open_ = len(seen["requests"])
            waiting = sum(1 for r in seen["requests"] if r.get("state") == "queued")
            busy = sum(1 for s in seen["squads"] if s.get("busy"))
        except Exception as exc:  # noqa: BLE001 - a missed sample only blanks one second
            log.debug("map unavailable: %s", exc)
        return Sample(
            sim_t=round(self.clock.now(), 1),
            made=len(self.run_info.requests),
            offered=len(tally.offered_requests),
            carried=len(tally.carried_over),
            resolved=tally.resolved,
            waiting=waiting,
            open=open_,
            squads_online=sum(a.online for a in self.agents),
            squads_busy=busy,
        )

    def _show(self, sample: Sample, last_print: float) -> float:
        if self.progress is None:
            return last_print
        carried = f" (+{sample.carried} carried over)" if sample.carried else ""
        text = (
            f"sim {self.clock.label(sample.sim_t)} x{self.config.speed:g} | requests "
            f"{sample.made} made{carried}, {sample.offered} offered, {sample.resolved} resolved, "
            f"{sample.waiting} waiting, {sample.open} open | squads {sample.squads_online}"
            f"/{len(self.agents)} online, {sample.squads_busy} busy"
        )
        if self.progress.isatty():
            self.progress.write("\r\x1b[2K" + text)
            self.progress.flush()
            return last_print
        now = time.monotonic()
        if now - last_print >= 10:  # a log file gets a line every 10 s, not a flood
            print(text, file=self.progress, flush=True)
            return now
        return last_print

    def _finish_progress(self) -> None:
        if self.progress is not None and self.progress.isatty():
            self.progress.write("\n")
            self.progress.flush()


# ---- command line ----------------------------------------------------------------------------


def add_run_arguments(parser: argparse.ArgumentParser, *, start_hour: float | None = None) -> None:
    """Options shared by this module's CLI and the demo's. ``start_hour``: the simulated
    day's default start (None: now in Luoyang)."""
    parser.add_argument(
        "--speed", type=float, default=5.0, help="run K times faster than real time (default 5)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=SimConfig.rate_per_hour,
        help="calls per simulated hour, day average (default %(default)g)",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--start-hour",
        type=float,
        default=start_hour,
        help="local hour the simulated day starts (default: "
        + ("now in Luoyang" if start_hour is None else f"{start_hour:g}")
        + ")",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many real seconds (default: Ctrl-C)",
    )
    parser.add_argument(
        "--out", default=None, help="report folder (default reports/sim-<timestamp>/)"
    )


def config_from(args: argparse.Namespace) -> SimConfig:
    if args.speed <= 0:
        raise SystemExit("--speed must be positive")
    return SimConfig(
        speed=args.speed,
        rate_per_hour=args.rate,
        seed=args.seed,
        start_hour=args.start_hour,
        duration_s=args.duration,
    )


def default_out_dir() -> Path:
    return Path("reports") / time.strftime("sim-%Y%m%d-%H%M%S")


def stop_on_signals(stop: asyncio.Event) -> None:
    """Ctrl-C and SIGTERM end the run cleanly (the report is still written)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _main(args: argparse.Namespace) -> int:
    from simulations.report import collect_and_write

    city = load_city(args.city)
    api = HubApi(args.url, parse_tokens(args.tokens))
    try:
        await api.wait_healthy(10)
        seats = await register_squads(
            api, city, args.squads_per_unit_per_district or city.demo.squads_per_unit_per_district
        )
        stop = asyncio.Event()
        stop_on_signals(stop)
        run = await Simulation(api, city, seats, config_from(args)).run(stop)
        files = await collect_and_write(api, city, run, Path(args.out or default_out_dir()))
        print(f"report: {files.html}")
    finally:
        await api.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.city",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the hub's base URL")
    parser.add_argument(
        "--tokens",
        required=True,
        help="role tokens as in DISPATCH_TOKENS (admin, calltaker, center, wall)",
    )
    parser.add_argument("--city", default=None, help="city TOML (default: shipped Luoyang)")
    parser.add_argument("--squads-per-unit-per-district", type=int, default=None)
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "MadeRequest",
    "Sample",
    "SimConfig",
    "SimRun",
    "Simulation",
    "hub_time_settings",
    "register_squads",
    "seat_plan",
]
