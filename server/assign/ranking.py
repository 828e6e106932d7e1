"""Candidate ranking: pure, over plain data.

Redis's GEO search narrows the candidates by its own (spherical) distance; the final order is
by geodesic distance on the WGS-84 ellipsoid. geopy's ``geodesic`` is a thin layer over
geographiclib; calling geographiclib's ``Inverse`` directly, asking for the distance only, is
the same computation at half the cost (this runs for every dispatch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from geographiclib.geodesic import Geodesic

from server.store.text import text


@dataclass(frozen=True, slots=True)
class Candidate:
    squad: str
    lat: float
    lon: float
    distance_m: float


def parse_candidates(flat: Sequence[bytes | str]) -> list[tuple[str, float, float]]:
    """The flat ``id, lon, lat, ...`` list from candidates.lua as (id, lat, lon) triples."""
    return [(text(flat[i]), float(flat[i + 2]), float(flat[i + 1])) for i in range(0, len(flat), 3)]


def rank(
    scene_lat: float, scene_lon: float, squads: Sequence[tuple[str, float, float]]
) -> list[Candidate]:
    """Squads (id, lat, lon) nearest first by geodesic distance; ties by id, so the order is
    deterministic."""
    ranked = [
        Candidate(sid, lat, lon, geodesic_m(scene_lat, scene_lon, lat, lon))
        for sid, lat, lon in squads
    ]
    ranked.sort(key=lambda c: (c.distance_m, c.squad))
    return ranked


_WGS84 = Geodesic.WGS84


def geodesic_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Geodesic distance on the WGS-84 ellipsoid, in metres (what geopy.distance.geodesic
    returns)."""
    return float(_WGS84.Inverse(lat1, lon1, lat2, lon2, Geodesic.DISTANCE)["s12"])


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres: cheap enough for every position fix (arrival check)."""
    from math import asin, cos, radians, sin, sqrt

    dlat, dlon = radians(lat2 - lat1), radians(lon2 - lon1)
    a = sin(dlat / 2) ** 2 + cos(radians(lat1)) * cos(radians(lat2)) * sin(dlon / 2) ** 2
    return 2 * 6_371_008.8 * asin(sqrt(a))
