"""Candidate ranking: geodesic order on WGS-84, deterministic ties, the flat Lua reply."""

from __future__ import annotations

import math
import random

import pytest
from geographiclib.geodesic import Geodesic

from server.assign.ranking import Candidate, haversine_m, parse_candidates, rank

# Luoyang, Laocheng district (latitude ~34.6).
SCENE = (34.6197, 112.4540)


def geodesic_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    return Geodesic.WGS84.Inverse(lat1, lon1, lat2, lon2)["s12"]


def test_rank_orders_by_independent_geodesic_distance() -> None:
    squads = [
        ("s-far", 34.70, 112.60),
        ("s-near", 34.6200, 112.4545),
        ("s-mid", 34.65, 112.40),
        ("s-south", 34.55, 112.45),
        ("s-west", 34.62, 112.30),
    ]
    ranked = rank(*SCENE, squads)
    expected = sorted(squads, key=lambda s: geodesic_m(*SCENE, s[1], s[2]))
    assert [c.squad for c in ranked] == [s[0] for s in expected]
    for cand in ranked:
        assert isinstance(cand, Candidate)
        assert cand.distance_m == pytest.approx(geodesic_m(*SCENE, cand.lat, cand.lon), abs=1e-3)
    # The candidate keeps its own coordinates (lat, lon not swapped).
    by_id = {c.squad: c for c in ranked}
    assert (by_id["s-far"].lat, by_id["s-far"].lon) == (34.70, 112.60)


def test_a_few_metres_decide_the_order() -> None:
    lat, lon = SCENE
    # ~5.4 m and ~5.2 m north (the same whole metre); the nearer one has the later id.
    squads = [("a", lat + 0.0000487, lon), ("z", lat + 0.0000469, lon)]
    assert [c.squad for c in rank(lat, lon, squads)] == ["z", "a"]


def test_ties_are_broken_by_squad_id() -> None:
    spot = (34.63, 112.47)
    ranked = rank(*SCENE, [("s-c", *spot), ("s-a", *spot), ("s-b", *spot)])
    assert [c.squad for c in ranked] == ["s-a", "s-b", "s-c"]
    assert len({c.distance_m for c in ranked}) == 1


def test_ties_order_does_not_depend_on_input_order() -> None:
    spot = (34.63, 112.47)
    squads = [("b", *spot), ("a", 34.60, 112.45), ("c", *spot), ("aa", *spot)]
    first = [c.squad for c in rank(*SCENE, squads)]
    second = [c.squad for c in rank(*SCENE, list(reversed(squads)))]
    assert first == second
    i = first.index("aa")
    assert first[i : i + 3] == ["aa", "b", "c"]


def test_fewer_degrees_can_be_more_metres() -> None:
    """At latitude ~34.6 a degree of longitude is ~0.82 of a degree of latitude: a squad
    0.0090 degrees north is nearer in degrees but farther in metres than one 0.0105 east."""
    lat, lon = SCENE
    # Ids chosen so that the id tie-break alone would put the wrong one first.
    north = ("a-north", lat + 0.0090, lon)
    east = ("b-east", lat, lon + 0.0105)
    # The premise, checked independently.
    assert abs(north[1] - lat) + abs(north[2] - lon) < abs(east[1] - lat) + abs(east[2] - lon)
    assert geodesic_m(lat, lon, north[1], north[2]) > geodesic_m(lat, lon, east[1], east[2])
    for squads in ([north, east], [east, north]):
        assert [c.squad for c in rank(lat, lon, squads)] == ["b-east", "a-north"]


def test_rank_of_nothing_is_empty() -> None:
    assert rank(*SCENE, []) == []


def test_a_squad_on_the_scene_is_first_at_zero() -> None:
    ranked = rank(*SCENE, [("s-1", 34.62, 112.46), ("s-0", *SCENE)])
    assert ranked[0].squad == "s-0"
    assert ranked[0].distance_m == pytest.approx(0.0, abs=1e-6)


# ---- the flat id, lon, lat list -----------------------------------------------------------


def test_parse_candidates_bytes() -> None:
    flat = [b"sq-1", b"112.454", b"34.6197", b"sq-2", b"112.5", b"34.7"]
    assert parse_candidates(flat) == [("sq-1", 34.6197, 112.454), ("sq-2", 34.7, 112.5)]


def test_parse_candidates_str_and_mixed() -> None:
    assert parse_candidates(["sq-1", "112.454", "34.6197"]) == [("sq-1", 34.6197, 112.454)]
    assert parse_candidates([b"sq-\xe6\xb4\x9b", "112.0", b"34.0"]) == [("sq-洛", 34.0, 112.0)]
    assert parse_candidates([]) == []


def test_parse_then_rank() -> None:
    flat = [b"a", b"112.60", b"34.70", b"b", b"112.4545", b"34.6200"]
    assert [c.squad for c in rank(*SCENE, parse_candidates(flat))] == ["b", "a"]


# ---- haversine -------------------------------------------------------------------------------

PAIRS = [
    ((34.6197, 112.4540), (34.6820, 112.4540)),  # Luoyang, north ~7 km
    ((34.6197, 112.4540), (34.6197, 112.5400)),  # Luoyang, east ~8 km
    ((34.6197, 112.4540), (34.7300, 112.7700)),  # Luoyang to Yanshi
    ((39.9042, 116.4074), (39.9900, 116.3100)),  # Beijing
    ((45.8038, 126.5350), (45.7500, 126.6500)),  # Harbin
    ((22.5431, 114.0579), (22.5000, 113.9000)),  # Shenzhen
    ((34.6197, 112.4540), (34.6198, 112.4541)),  # ~14 m
]


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_haversine_within_half_a_percent_of_geodesic(
    a: tuple[float, float], b: tuple[float, float]
) -> None:
    exact = geodesic_m(*a, *b)
    assert haversine_m(*a, *b) == pytest.approx(exact, rel=0.005)
    assert haversine_m(*b, *a) == pytest.approx(haversine_m(*a, *b))


def test_haversine_of_a_point_to_itself_is_zero() -> None:
    assert haversine_m(*SCENE, *SCENE) == 0.0


# ---- geodesics only between near-ties -------------------------------------------------------


def _full_geodesic_order(
    scene: tuple[float, float], squads: list[tuple[str, float, float]]
) -> list[str]:
    return [s[0] for s in sorted(squads, key=lambda s: (geodesic_m(*scene, s[1], s[2]), s[0]))]


def test_the_order_is_the_full_geodesic_order_wherever_and_however_close() -> None:
    """Random scenes over the whole globe (but the poles' caps GEO cannot store), candidates
    spread from metres to tens of kilometres, with near-ties made on purpose (the same
    spherical distance on another bearing, twins on one spot, the scene itself)."""
    rng = random.Random(20261130)
    for trial in range(800):
        lat, lon = rng.uniform(-84, 84), rng.uniform(-180, 180)
        spread = rng.choice((0.0001, 0.01, 0.3))
        squads = [
            (f"s{i}", lat + rng.uniform(-spread, spread), lon + rng.uniform(-spread, spread))
            for i in range(rng.randint(1, 8))
        ]
        if trial % 3 == 0:  # another squad at the first one's spherical distance, turned
            _, a_lat, a_lon = squads[0]
            bearing = rng.uniform(0, 2 * math.pi)
            reach = math.hypot(a_lat - lat, (a_lon - lon) * math.cos(math.radians(lat)))
            squads.append(
                (
                    "turned",
                    lat + reach * math.cos(bearing),
                    lon + reach * math.sin(bearing) / math.cos(math.radians(lat)),
                )
            )
        if trial % 5 == 0:
            squads += [("twin-b", *squads[0][1:]), ("twin-a", *squads[0][1:])]
        if trial % 7 == 0:
            squads.append(("on-scene", lat, lon))
        rng.shuffle(squads)
        ranked = rank(lat, lon, squads)
        assert [c.squad for c in ranked] == _full_geodesic_order((lat, lon), squads), (lat, lon)


def test_geodesics_are_computed_only_between_near_ties(monkeypatch: pytest.MonkeyPatch) -> None:
    import server.assign.ranking as ranking

    calls: list[tuple[float, float]] = []
    exact = ranking.geodesic_m

    def counted(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
        calls.append((lat2, lon2))
        return exact(lat1, lon1, lat2, lon2)

    monkeypatch.setattr(ranking, "geodesic_m", counted)
    lat, lon = SCENE
    apart = [(f"s{i}", lat + 0.01 * (i + 1), lon) for i in range(5)]  # 1.1, 2.2, ... km
    assert [c.squad for c in rank(lat, lon, apart)] == ["s0", "s1", "s2", "s3", "s4"]
    assert calls == []  # each farther by far more than the margin: no geodesic at all
    north = ("north", lat + 0.01, lon)
    east = ("east", lat, lon + 0.01 / math.cos(math.radians(lat)))  # the same spherical distance
    ranked = rank(lat, lon, [*apart[2:], north, east])
    assert sorted(calls) == sorted([north[1:], east[1:]])  # the near-tie alone
    assert [c.squad for c in ranked] == _full_geodesic_order(SCENE, [*apart[2:], north, east])
