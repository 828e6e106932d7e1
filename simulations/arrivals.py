"""The citizens' side: when calls come in, what they are about, and where.

Pure: every function takes its ``random.Random`` so a seeded run repeats itself. Times are
simulated seconds since the start of the run; the hour of day comes from the run's
:class:`simulations.clock.SimClock`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from server.city import City, District
from simulations.movement import LatLon, offset_m

# Relative call volume by local hour (0-23): a hotline is quiet at night and peaks when people
# leave for work and come home. Normalised to a mean of 1 by ``hour_weight``.
HOUR_PROFILE: tuple[float, ...] = (
    0.25,
    0.15,
    0.10,
    0.10,
    0.12,
    0.25,
    0.55,
    1.00,
    1.50,
    1.70,
    1.60,
    1.40,
    1.10,
    1.00,
    1.10,
    1.20,
    1.30,
    1.50,
    1.70,
    1.80,
    1.50,
    1.10,
    0.70,
    0.40,
)
_PROFILE_MEAN = sum(HOUR_PROFILE) / len(HOUR_PROFILE)

# Relative frequency of each category. Water, power, roads and sanitation dominate a city
# hotline; a gas leak is rare. Categories missing here (a city file may add some) weigh 1.
CATEGORY_WEIGHTS: Mapping[str, float] = {
    "water_main_burst": 3.0,
    "water_outage": 5.0,
    "water_quality": 1.5,
    "power_outage": 5.0,
    "power_line_down": 1.5,
    "gas_leak_smell": 0.3,
    "gas_outage": 0.8,
    "heating_outage": 2.0,
    "road_damage": 3.0,
    "manhole_cover_missing": 1.5,
    "streetlight_out": 3.0,
    "drain_blocked": 2.0,
    "sewage_overflow": 1.0,
    "garbage_uncollected": 5.0,
    "public_toilet_fault": 1.5,
    "illegal_street_vending": 2.0,
    "illegal_construction": 0.6,
    "construction_noise": 2.0,
    "tree_fallen": 0.8,
    "housing_repair": 1.5,
    "elevator_trapped": 0.6,
    "bus_service": 1.2,
    "traffic_signal_fault": 1.0,
    "telecom_outage": 1.0,
    # Calls for 110/119/120 reach the same desk and are handed over, not dispatched.
    "police": 0.5,
    "fire": 0.15,
    "medical": 0.3,
}

# Relative call volume by district: roughly population; the urban districts call most.
DISTRICT_WEIGHTS: Mapping[str, float] = {
    "laocheng": 1.0,
    "xigong": 1.3,
    "chanhe": 0.8,
    "jianxi": 1.4,
    "luolong": 1.8,
    "yanshi": 0.8,
    "mengjin": 0.6,
}

# Short descriptions a call-taker might type; a category without one uses its Chinese name.
DESCRIPTIONS: Mapping[str, tuple[str, ...]] = {
    "water_main_burst": ("路面冒水，疑似供水管道爆裂", "小区门口水管爆裂，水流很大"),
    "water_outage": ("整栋楼停水，未见通知", "小区突然停水"),
    "power_outage": ("片区停电", "楼内突然停电，电梯停运"),
    "power_line_down": ("电线掉落在人行道上", "大风刮断电线"),
    "gas_leak_smell": ("楼道内有明显燃气味", "厨房燃气表附近有异味"),
    "road_damage": ("路面塌陷，有坑洞", "道路破损严重，车辆难以通行"),
    "manhole_cover_missing": ("井盖缺失，存在安全隐患",),
    "streetlight_out": ("整条路路灯不亮",),
    "garbage_uncollected": ("垃圾桶满溢，多日未清运",),
    "construction_noise": ("夜间施工噪音扰民",),
    "elevator_trapped": ("电梯困人，有老人被困",),
    "tree_fallen": ("大树倒伏，阻断道路",),
}

NEAR_DEPOT_SHARE = 0.6  # people live around the towns and centres where depots are
NEAR_DEPOT_SPREAD_M = 2500.0
MAX_TRIES = 10_000


def hour_weight(hour_of_day: float) -> float:
    """The profile at this local hour, normalised so the day's mean is 1."""
    return HOUR_PROFILE[int(hour_of_day) % 24] / _PROFILE_MEAN


def peak_hour_weight() -> float:
    return max(HOUR_PROFILE) / _PROFILE_MEAN


def next_arrival(
    rng: random.Random, t: float, rate_per_s: Callable[[float], float], max_rate_per_s: float
) -> float:
    """The next arrival after ``t`` of a Poisson process with intensity ``rate_per_s(t)``.

    Thinning (Lewis-Shedler): draw candidates at the constant ``max_rate_per_s`` and keep each
    with probability ``rate(t) / max_rate``; the kept ones form the non-homogeneous process.
    ``rate_per_s`` must never exceed ``max_rate_per_s``.
    """
    if max_rate_per_s <= 0:
        return math.inf
    while True:
        t += rng.expovariate(max_rate_per_s)
        if rng.random() * max_rate_per_s <= rate_per_s(t):
            return t


class ArrivalProcess:
    """Calls at ``rate_per_hour`` on average over a day, shaped by :data:`HOUR_PROFILE`.

    ``hour_at(t)`` gives the local hour of day (0-24) at simulated second ``t``.
    """

    def __init__(
        self, rate_per_hour: float, hour_at: Callable[[float], float], rng: random.Random
    ) -> None:
        self.rate_per_hour = rate_per_hour
        self._hour_at = hour_at
        self._rng = rng

    def rate_per_s(self, t: float) -> float:
        return self.rate_per_hour / 3600.0 * hour_weight(self._hour_at(t))

    def next_after(self, t: float) -> float:
        peak = self.rate_per_hour / 3600.0 * peak_hour_weight()
        return next_arrival(self._rng, t, self.rate_per_s, peak)


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """A citizen's call, as the call-taker will enter it."""

    category: str
    district: str
    lat: float
    lon: float
    description: str
    caller_phone: str
    address: str


def weighted_choice(rng: random.Random, weights: Mapping[str, float]) -> str:
    names = list(weights)
    return rng.choices(names, weights=[weights[n] for n in names], k=1)[0]


def category_weights(
    city: City, weights: Mapping[str, float] = CATEGORY_WEIGHTS, *, linkage_only: bool = False
) -> dict[str, float]:
    """Weights for the city's categories (1 for one the table does not know)."""
    return {
        c.code: weights.get(c.code, 1.0)
        for c in city.categories
        if not linkage_only or c.route == "linkage"
    }


def sample_point(
    rng: random.Random, district: District, near_depot_share: float = NEAR_DEPOT_SHARE
) -> LatLon:
    """A random point inside ``district``: near one of its depots (a town or centre) with
    probability ``near_depot_share``, else uniform over its area. Rejection sampling on
    :meth:`District.contains`, so the point is always inside."""
    min_lat, min_lon, max_lat, max_lon = district.bbox
    for _ in range(MAX_TRIES):
        if rng.random() < near_depot_share:
            depot = rng.choice(district.depots)
            point = offset_m(
                depot, rng.gauss(0, NEAR_DEPOT_SPREAD_M), rng.gauss(0, NEAR_DEPOT_SPREAD_M)
            )
        else:
            point = (rng.uniform(min_lat, max_lat), rng.uniform(min_lon, max_lon))
        if district.contains(*point):
            return point
    return district.depots[0]  # a degenerate polygon; depots are checked to lie inside


def plan_request(
    rng: random.Random,
    city: City,
    districts: Sequence[str] | None = None,
    *,
    linkage_only: bool = False,
) -> PlannedRequest:
    """One call: category by :data:`CATEGORY_WEIGHTS`, district by :data:`DISTRICT_WEIGHTS`
    (restricted to ``districts`` if given), a point inside it, a description and a phone."""
    allowed = [d for d in city.districts if districts is None or d.code in districts]
    district_code = weighted_choice(
        rng, {d.code: DISTRICT_WEIGHTS.get(d.code, 1.0) for d in allowed}
    )
    district = city.district(district_code)
    assert district is not None
    code = weighted_choice(rng, category_weights(city, linkage_only=linkage_only))
    category = city.category(code)
    assert category is not None
    lat, lon = sample_point(rng, district)
    texts = DESCRIPTIONS.get(code) or (category.name_zh,)
    return PlannedRequest(
        category=code,
        district=district_code,
        lat=round(lat, 6),
        lon=round(lon, 6),
        description=rng.choice(texts),
        caller_phone="1" + rng.choice("3589") + "".join(rng.choices("0123456789", k=9)),
        address=f"{district.name_zh}（模拟地点）",
    )


def repeat_of(planned: PlannedRequest, rng: random.Random) -> PlannedRequest:
    """The same problem called in by someone else: same category, a few dozen metres away,
    another phone."""
    return replace(
        planned,
        lat=round(planned.lat + rng.uniform(-0.0004, 0.0004), 6),
        lon=round(planned.lon + rng.uniform(-0.0004, 0.0004), 6),
        caller_phone="1" + rng.choice("3589") + "".join(rng.choices("0123456789", k=9)),
    )
