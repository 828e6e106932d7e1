"""What one run of the simulated city made and saw (:class:`SimRun`): written by
:mod:`simulations.city` as it runs, read by :mod:`simulations.report` at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simulations.squad import Tally


@dataclass(frozen=True, slots=True)
class MadeRequest:
    """A call the simulation placed, as the intake answered it."""

    id: str
    category: str
    district: str
    unit: str | None
    route: str
    sim_t: float
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Sample:
    """The city once a second, for the progress line and the load plot."""

    sim_t: float
    made: int
    offered: int
    carried: int  # held from before a restart: resumed, neither made nor offered in this run
    resolved: int
    waiting: int  # queued at the hub: no squad has it
    open: int
    squads_online: int
    squads_busy: int


@dataclass
class SimRun:
    """Everything a report needs to know about a run besides the hub's timelines."""

    speed: float
    rate_per_hour: float
    seed: int | None
    start_hour: float
    started_at: float = 0.0  # real epoch seconds
    ended_at: float = 0.0
    squads: int = 0
    requests: list[MadeRequest] = field(default_factory=list)
    refused: int = 0
    samples: list[Sample] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)

    @property
    def sim_duration_s(self) -> float:
        return (self.ended_at - self.started_at) * self.speed

    def to_json(self) -> dict[str, Any]:
        return {
            "speed": self.speed,
            "rate_per_hour": self.rate_per_hour,
            "seed": self.seed,
            "start_hour": self.start_hour,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "sim_duration_s": round(self.sim_duration_s, 1),
            "squads": self.squads,
            "requests_made": len(self.requests),
            "refused": self.refused,
            "squad_actions": self.tally.as_dict(),
        }
