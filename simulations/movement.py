"""Where a squad's vehicle is: routes along the street grid and trips at a steady speed.

Pure: no clock, no I/O. Times are simulated seconds, positions ``(lat, lon)``. Distances use
the haversine formula; interpolation is linear in latitude/longitude, which is exact enough
over the few tens of kilometres of a city.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from dataclasses import dataclass, field

LatLon = tuple[float, float]
EARTH_RADIUS_M = 6_371_008.8
STRAIGHT_BELOW_M = 300.0  # short hops (the last block) are driven straight


def distance_m(a: LatLon, b: LatLon) -> float:
    """Great-circle distance in metres."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, h)))


def interpolate(a: LatLon, b: LatLon, fraction: float) -> LatLon:
    return (a[0] + (b[0] - a[0]) * fraction, a[1] + (b[1] - a[1]) * fraction)


def offset_m(point: LatLon, north_m: float, east_m: float) -> LatLon:
    """The point ``north_m`` north and ``east_m`` east of ``point``."""
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlon = math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(point[0]))))
    return (point[0] + dlat, point[1] + dlon)


def street_route(start: LatLon, end: LatLon, rng: random.Random) -> list[LatLon]:
    """Waypoints from ``start`` to ``end`` along an L: one leg north-south, one east-west.

    Luoyang's streets run mostly on a north-south/east-west grid, so an L is the shape of a
    typical drive; its length over the straight line (1 to 1.41, about 1.27 on average) is the
    usual urban detour factor. Which leg comes first is a coin toss, so two squads on the
    same errand do not always share a road.
    """
    if distance_m(start, end) < STRAIGHT_BELOW_M:
        return [start, end]
    corner = (end[0], start[1]) if rng.random() < 0.5 else (start[0], end[1])
    return [start, corner, end]


def route_length_m(waypoints: list[LatLon]) -> float:
    return sum(distance_m(a, b) for a, b in zip(waypoints, waypoints[1:], strict=False))


@dataclass(frozen=True)
class Trip:
    """A drive along ``waypoints`` at ``speed_mps``, leaving at simulated time ``start_t``."""

    waypoints: tuple[LatLon, ...]
    speed_mps: float
    start_t: float
    _cumulative: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.waypoints:
            raise ValueError("a trip needs at least one waypoint")
        if self.speed_mps <= 0:
            raise ValueError("speed must be positive")
        totals = [0.0]
        for a, b in zip(self.waypoints, self.waypoints[1:], strict=False):
            totals.append(totals[-1] + distance_m(a, b))
        object.__setattr__(self, "_cumulative", tuple(totals))

    @classmethod
    def staying(cls, where: LatLon, t: float) -> Trip:
        """A trip that never moves (a squad parked at ``where``)."""
        return cls((where,), 1.0, t)

    @property
    def length_m(self) -> float:
        return self._cumulative[-1]

    @property
    def duration_s(self) -> float:
        return self.length_m / self.speed_mps

    @property
    def end_t(self) -> float:
        return self.start_t + self.duration_s

    @property
    def destination(self) -> LatLon:
        return self.waypoints[-1]

    def position_at(self, t: float) -> LatLon:
        """Where the vehicle is at simulated time ``t`` (at the ends before/after the trip)."""
        travelled = (t - self.start_t) * self.speed_mps
        if travelled <= 0:
            return self.waypoints[0]
        if travelled >= self.length_m:
            return self.waypoints[-1]
        leg = bisect_right(self._cumulative, travelled) - 1
        leg_length = self._cumulative[leg + 1] - self._cumulative[leg]
        fraction = (travelled - self._cumulative[leg]) / leg_length if leg_length else 1.0
        return interpolate(self.waypoints[leg], self.waypoints[leg + 1], fraction)

    def time_at_remaining(self, remaining_m: float) -> float:
        """When only ``remaining_m`` of the route is left (the start if it is shorter)."""
        return self.start_t + max(0.0, self.length_m - remaining_m) / self.speed_mps


def kmh_to_mps(kmh: float) -> float:
    return kmh / 3.6
