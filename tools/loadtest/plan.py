"""What the load test puts on the map: where squads live and where requests come from. Pure.

Most squads belong to a few big units (water, power, gas, municipal works) so that each
request has many real candidates to search and rank; the other units get a few squads each.
Squads start around the districts' depots; requests fall around the depots too, always inside
a district, in categories of the big units, weighted like the squads.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from server.city import City

BIG_UNITS: dict[str, float] = {"water": 0.35, "power": 0.25, "gas": 0.15, "municipal": 0.10}
SPREAD_KM = 2.0  # standard deviation of a squad's or a request's distance from its depot
KM_PER_DEG_LAT = 111.2


@dataclass(frozen=True, slots=True)
class SquadPlan:
    unit: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class RequestPlan:
    category: str
    lat: float
    lon: float
    at_s: float = 0.0  # when it is due, from the start of the measure phase


def unit_counts(city: City, total: int, big: dict[str, float] | None = None) -> dict[str, int]:
    """How many squads each unit gets: the big units their shares, the rest split evenly.

    Largest-remainder rounding, so the counts add up to ``total`` exactly.
    """
    big = {u: s for u, s in (big or BIG_UNITS).items() if city.unit(u) is not None}
    others = [u.code for u in city.units if u.code not in big]
    rest = max(0.0, 1.0 - sum(big.values()))
    shares = dict(big) | {u: rest / len(others) for u in others} if others else dict(big)
    norm = sum(shares.values())
    exact = {u: total * s / norm for u, s in shares.items()}
    counts = {u: math.floor(x) for u, x in exact.items()}
    by_remainder = sorted(exact, key=lambda u: (counts[u] - exact[u], u))
    for unit in by_remainder[: total - sum(counts.values())]:
        counts[unit] += 1
    return counts


def near(
    city: City, lat: float, lon: float, rng: random.Random, spread_km: float = SPREAD_KM
) -> tuple[float, float]:
    """A random point around (lat, lon) that lies inside one of the city's districts."""
    for _ in range(100):
        dlat = rng.gauss(0.0, spread_km) / KM_PER_DEG_LAT
        dlon = rng.gauss(0.0, spread_km) / (KM_PER_DEG_LAT * math.cos(math.radians(lat)))
        point = (round(lat + dlat, 6), round(lon + dlon, 6))
        if city.district_at(*point) is not None:
            return point
    return lat, lon  # depots lie inside their districts (the city loader checks it)


def depots_of(city: City, unit: str) -> list[tuple[float, float]]:
    found = city.unit(unit)
    codes = found.districts if found else ()
    return [(d[0], d[1]) for code in codes if (dist := city.district(code)) for d in dist.depots]


def plan_squads(city: City, total: int, rng: random.Random) -> list[SquadPlan]:
    """``total`` squads, spread over units (see :func:`unit_counts`) and their depots."""
    plans: list[SquadPlan] = []
    for unit, count in unit_counts(city, total).items():
        depots = depots_of(city, unit)
        for _ in range(count):
            lat, lon = near(city, *rng.choice(depots), rng)
            plans.append(SquadPlan(unit, lat, lon))
    rng.shuffle(plans)  # mixes units across hubs and client processes
    return plans


def request_categories(city: City, squads: Sequence[SquadPlan]) -> tuple[list[str], list[float]]:
    """Categories of the big units that have squads, weighted by their squad counts."""
    per_unit: dict[str, int] = {}
    for squad in squads:
        if squad.unit in BIG_UNITS:
            per_unit[squad.unit] = per_unit.get(squad.unit, 0) + 1
    categories: list[str] = []
    weights: list[float] = []
    for code, count in sorted(per_unit.items()):
        unit = city.unit(code)
        assert unit is not None
        for category in unit.categories:
            categories.append(category)
            weights.append(count / len(unit.categories))
    return categories, weights


def plan_requests(
    city: City,
    total: int,
    squads: Sequence[SquadPlan],
    rng: random.Random,
    duration_s: float = 0.0,
    arrivals: str = "poisson",
) -> list[RequestPlan]:
    """``total`` requests in the big units' categories, each inside a district the category's
    unit covers, due within ``duration_s``: at random, as calls come (``poisson``: a Poisson
    process of ``total`` arrivals, that is ``total`` uniform times in order), or ``even``
    (every ``duration_s / total``). Even arrivals share their period with the clients'
    position ticks (both 10 ms at 100 requests and 1 fix per second a squad), so every
    request met the same phase of the positions' bursts: a run read the wait behind a burst,
    or none, for every request alike."""
    categories, weights = request_categories(city, squads)
    if not categories:
        raise ValueError("no squad of a big unit: nothing to dispatch to")
    if arrivals == "poisson":
        times = sorted(rng.uniform(0, duration_s) for _ in range(total))
    elif arrivals == "even":
        times = [i * duration_s / total for i in range(total)]
    else:
        raise ValueError(f"arrivals: poisson or even, not {arrivals!r}")
    plans = []
    for category, at_s in zip(rng.choices(categories, weights, k=total), times, strict=True):
        unit = next(u.code for u in city.units if category in u.categories)
        lat, lon = near(city, *rng.choice(depots_of(city, unit)), rng)
        plans.append(RequestPlan(category, lat, lon, round(at_s, 6)))
    return plans
