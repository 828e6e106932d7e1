"""Candidate ranking: pure, over plain data.

Redis's GEO search narrows the candidates by its own (spherical) distance; the final order is
by geodesic distance on the WGS-84 ellipsoid. A geodesic costs ~70 µs (geographiclib's
``Inverse``, asking for the distance only: geopy's ``geodesic`` is a layer over it at twice
the cost), a spherical distance ~1 µs, and the two orders can differ only between candidates
whose spherical distances are within ``NEAR_TIE`` of each other: so candidates are sorted by
the spherical distance, and geodesics are computed only inside such groups of near-ties. The
order is the geodesic order all the same (``tests/test_ranking.py`` checks it against a full
geodesic sort).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import asin, cos, radians, sin, sqrt

from geographiclib.geodesic import Geodesic

from server.store.text import text

# The spherical distance (any radius) over the geodesic one depends on the bearing and the
# latitude and spans about 1 % (the ellipsoid's radius of curvature runs from 6,335 to
# 6,400 km around the sphere's 6,371), so when one candidate is more than 2 % farther than
# another by the spherical distance, it is farther by the geodesic too. offer_nearest.lua
# applies the same margin to Redis's own distances.
NEAR_TIE = 0.02
_SAME_SPOT_M = 0.01  # closer than this in absolute terms: a near-tie whatever the ratio


@dataclass(frozen=True, slots=True)
class Candidate:
    squad: str
    lat: float
    lon: float
    scene_lat: float
    scene_lon: float

    @property
    def distance_m(self) -> float:
        """The geodesic distance to the scene (computed when asked: the ranking needs it
        only between near-ties)."""
        return geodesic_m(self.scene_lat, self.scene_lon, self.lat, self.lon)


def parse_candidates(flat: Sequence[bytes | str]) -> list[tuple[str, float, float]]:
    """The flat ``id, lon, lat, ...`` list from candidates.lua as (id, lat, lon) triples."""
    return [(text(flat[i]), float(flat[i + 2]), float(flat[i + 1])) for i in range(0, len(flat), 3)]


def rank(
    scene_lat: float, scene_lon: float, squads: Sequence[tuple[str, float, float]]
) -> list[Candidate]:
    """Squads (id, lat, lon) nearest first by geodesic distance; ties by id, so the order is
    deterministic."""
    by_sphere = sorted(
        (haversine_m(scene_lat, scene_lon, lat, lon), sid, lat, lon) for sid, lat, lon in squads
    )
    ranked: list[Candidate] = []
    group: list[tuple[float, str, float, float]] = []
    for near in by_sphere:
        if group and near[0] > group[-1][0] * (1 + NEAR_TIE) + _SAME_SPOT_M:
            ranked += _by_geodesic(scene_lat, scene_lon, group)
            group = []
        group.append(near)
    ranked += _by_geodesic(scene_lat, scene_lon, group)
    return ranked


def _by_geodesic(
    scene_lat: float, scene_lon: float, group: list[tuple[float, str, float, float]]
) -> list[Candidate]:
    """A group of near-ties (or one candidate) in the geodesic order, ties by id."""
    if len(group) > 1:
        group = sorted(group, key=lambda g: (geodesic_m(scene_lat, scene_lon, g[2], g[3]), g[1]))
    return [Candidate(sid, lat, lon, scene_lat, scene_lon) for _, sid, lat, lon in group]


_WGS84 = Geodesic.WGS84


def geodesic_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Geodesic distance on the WGS-84 ellipsoid, in metres (what geopy.distance.geodesic
    returns)."""
    return float(_WGS84.Inverse(lat1, lon1, lat2, lon2, Geodesic.DISTANCE)["s12"])


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres: cheap enough for every position fix (arrival check)."""
    dlat, dlon = radians(lat2 - lat1), radians(lon2 - lon1)
    a = sin(dlat / 2) ** 2 + cos(radians(lat1)) * cos(radians(lat2)) * sin(dlon / 2) ** 2
    return 2 * 6_371_008.8 * asin(sqrt(a))
