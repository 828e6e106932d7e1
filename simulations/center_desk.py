"""The simulated supervision center: it rules on disputes and cancels repeat calls.

Pure decisions (:func:`ruling_for`, :func:`find_duplicate`) over plain data, and a thin agent
(:class:`CenterDesk`) that polls the hub's center API and carries them out, as a person at
the center's desk would: the dispute queue every few simulated minutes, every new call
checked against the recent ones.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from server.city import City
from simulations.api import ApiError, HubApi
from simulations.clock import SimClock
from simulations.movement import distance_m

log = logging.getLogger(__name__)

DUPLICATE_RADIUS_M = 300.0  # the same problem reported again nearby ...
DUPLICATE_WINDOW_S = 1800.0  # ... within half an hour (simulated)


@dataclass(frozen=True, slots=True)
class Call:
    """A request as the desk saw it made."""

    id: str
    category: str
    lat: float
    lon: float
    sim_t: float


@dataclass(frozen=True, slots=True)
class Ruling:
    decision: str  # "uphold" | "reassign"
    unit: str = ""
    category: str = ""
    note: str = ""

    def body(self) -> dict[str, str]:
        body = {"decision": self.decision, "note": self.note}
        if self.decision == "reassign":
            body |= {"unit": self.unit, "category": self.category}
        return body


def ruling_for(
    dispute: Mapping[str, Any], city: City, rng: random.Random, reassign_share: float = 0.5
) -> Ruling:
    """A ruling on one disputed request. The city's table names one unit per category and
    district, so a dispute is upheld unless the desk judges the matter to be another kind of
    problem (a share of the time): then it goes, under a category of another unit serving the
    same district, to that unit."""
    district, unit = str(dispute.get("district", "")), str(dispute.get("unit", ""))
    others = [
        (code, responsible.code)
        for code in sorted(c.code for c in city.categories if c.route == "linkage")
        if (responsible := city.unit_for(code, district)) is not None and responsible.code != unit
    ]
    if others and rng.random() < reassign_share:
        category, other = rng.choice(others)
        return Ruling("reassign", other, category, "模拟中心：属其他单位管辖，改派")
    return Ruling("uphold", note="模拟中心：维持原单位处置")


def find_duplicate(call: Call, earlier: Sequence[Call]) -> Call | None:
    """The earliest recent call of the same category near this one, if any."""
    for previous in earlier:
        if (
            previous.id != call.id
            and previous.category == call.category
            and 0 <= call.sim_t - previous.sim_t <= DUPLICATE_WINDOW_S
            and distance_m((call.lat, call.lon), (previous.lat, previous.lon)) <= DUPLICATE_RADIUS_M
        ):
            return previous
    return None


@dataclass
class DeskTally:
    rulings: dict[str, int] = field(default_factory=dict)
    cancelled_duplicates: int = 0
    refused: int = 0  # an action the hub refused (the item moved on meanwhile)


class CenterDesk:
    """Polls the dispute queue and rules; cancels the calls it recognises as repeats."""

    def __init__(
        self,
        api: HubApi,
        city: City,
        clock: SimClock,
        rng: random.Random,
        poll_sim_s: float = 300.0,
    ) -> None:
        self.api, self.city, self.clock, self.rng = api, city, clock, rng
        self.poll_sim_s = poll_sim_s
        self.tally = DeskTally()
        self._calls: list[Call] = []

    async def run(self) -> None:
        while True:
            await self.clock.sleep(self.poll_sim_s)
            try:
                await self.rule_on_disputes()
            except (ApiError, httpx.HTTPError) as exc:
                log.warning("center desk: dispute queue unavailable: %s", exc)

    async def rule_on_disputes(self) -> int:
        disputes = await self.api.disputes()
        for dispute in disputes:
            ruling = ruling_for(dispute, self.city, self.rng)
            try:
                await self.api.rule(str(dispute["id"]), ruling.body())
            except ApiError as exc:
                self.tally.refused += 1
                log.info("center desk: ruling on %s refused: %s", dispute["id"], exc)
                continue
            self.tally.rulings[ruling.decision] = self.tally.rulings.get(ruling.decision, 0) + 1
        return len(disputes)

    async def saw_call(self, call: Call) -> None:
        """A new call came in: cancel it if it repeats a recent one."""
        recent = [c for c in self._calls if call.sim_t - c.sim_t <= DUPLICATE_WINDOW_S]
        self._calls = [*recent, call]
        original = find_duplicate(call, recent)
        if original is None:
            return
        try:
            await self.api.cancel(
                call.id,
                {
                    "reason": "duplicate",
                    "duplicate_of": original.id,
                    "note": "模拟中心：重复来电",
                },
            )
        except ApiError as exc:
            self.tally.refused += 1
            log.info("center desk: cancel of %s refused: %s", call.id, exc)
            return
        self.tally.cancelled_duplicates += 1
