"""Possible duplicates of a request about to be sent: the same category, close by, received
recently. Pure: the caller gathers what was seen (:mod:`server.calltaker.reads`).

A cancelled request is no duplicate (it was one itself, or it was withdrawn); a resolved
or transferred one still is (the same streetlight again within the hour, a second caller
for the same fire): the call-taker sees its state and decides.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from server.assign.ranking import geodesic_m
from server.lifecycle import State

METRES_PER_DEGREE = 111_320.0  # of latitude (and of longitude at the equator)


class Seen(msgspec.Struct, frozen=True, kw_only=True):
    """A request as the duplicate check sees it."""

    id: str
    category: str
    lat: float
    lon: float
    received_at: float
    state: str
    unit: str = ""
    district: str = ""
    address: str = ""


@dataclass(frozen=True, slots=True)
class Possible:
    seen: Seen
    distance_m: float


def possible_duplicates(
    category: str,
    lat: float,
    lon: float,
    seen: Iterable[Seen],
    *,
    now: float,
    radius_m: float,
    window_s: float,
) -> list[Possible]:
    """The requests of ``category`` within ``radius_m`` of (lat, lon) received in the last
    ``window_s`` before ``now``, not cancelled, nearest first (each id once)."""
    found: dict[str, Possible] = {}
    min_lat, min_lon, max_lat, max_lon = box(lat, lon, radius_m)
    for item in seen:
        if item.category != category or item.state == State.CANCELLED.value:
            continue
        if not now - window_s <= item.received_at <= now + 60:  # a little clock skew
            continue
        if not (min_lat <= item.lat <= max_lat and min_lon <= item.lon <= max_lon):
            continue  # the exact distance costs ~50 µs: only for what may be inside
        distance = geodesic_m(lat, lon, item.lat, item.lon)
        if distance <= radius_m:
            found[item.id] = Possible(item, distance)
    return sorted(found.values(), key=lambda p: (p.distance_m, p.seen.id))


def box(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float]:
    """(min_lat, min_lon, max_lat, max_lon) holding the circle, a little larger: what a
    database can narrow by before the exact distance."""
    dlat = radius_m * 1.01 / METRES_PER_DEGREE
    dlon = dlat / max(math.cos(math.radians(lat)), 0.01)
    return (lat - dlat, lon - dlon, lat + dlat, lon + dlon)
