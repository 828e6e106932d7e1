"""City configuration model: the typed shape of a city TOML file and the `City` lookup object.

The msgspec Structs mirror the TOML file one to one, so decoding validates field names, types
and ranges in one pass and reports errors with a path such as
`$.categories[3].limits.accept_s`. Cross-record rules (unknown codes, routing gaps, polygon
rings) are checked in `loader.py`; `City` assumes a file that passed those checks.

Coordinate order: GeoJSON boundaries are `[lon, lat]` (as the GeoJSON spec requires), while
everything else in this package (`center`, `depots`, function arguments, bboxes) is
`(lat, lon)`.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

import msgspec

__all__ = [
    "BBox",
    "Category",
    "City",
    "CityConfigError",
    "CityFile",
    "CityInfo",
    "DEFAULT_TIMEZONE",
    "Demo",
    "District",
    "Limits",
    "Polygon",
    "Route",
    "Unit",
]


class CityConfigError(ValueError):
    """The city configuration cannot be read, decoded, or is inconsistent.

    `problems` lists every problem found (semantic checks report all of them at once, so a
    config author can fix the file in one go); `str(err)` names them all.
    """

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = problems or (message,)


Code = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
Name = Annotated[str, msgspec.Meta(min_length=1)]
Seconds = Annotated[int, msgspec.Meta(ge=0)]
Lat = Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
Lon = Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]
LatLon = tuple[Lat, Lon]
LonLat = tuple[Lon, Lat]
# A ring is kept as decoded; closure and the 4-point minimum are checked by the loader so the
# message can say which district is broken rather than only a JSON path.
Ring = tuple[LonLat, ...]
BBox = tuple[float, float, float, float]
"""(min_lat, min_lon, max_lat, max_lon)."""

# Toneless syllables separated by single spaces ("gong shui"); "v" stands for u-umlaut.
Pinyin = Annotated[str, msgspec.Meta(pattern=r"^([a-z]+( [a-z]+)*)?$", max_length=400)]

Route = Literal["linkage", "police", "fire", "medical"]
"""`linkage` tickets are dispatched to a city unit; the others are handed over to 110/119/120."""


DEFAULT_PROMISE_MAX_S = 14 * 86_400  # two weeks: room for a part to be ordered and fitted


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Service-level deadlines in seconds, each counted from the ticket's creation.

    For linkage categories the loader requires 0 < accept_s <= arrive_s <= resolve_s. For
    police/fire/medical (not dispatched here) 0 means "not tracked".
    """

    accept_s: Seconds
    arrive_s: Seconds
    resolve_s: Seconds
    # The furthest a squad's promise (``defer``) may reach, from the time it is made; the
    # loader requires resolve_s <= promise_max_s for linkage categories.
    promise_max_s: Seconds = DEFAULT_PROMISE_MAX_S


class Category(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A kind of citizen request. `work_s` is the typical on-scene work time (simulation).
    `pinyin`: the toneless pinyin of `name_zh`, one syllable per Han character ("" : none
    given; the intake console then finds the category by its Chinese and English names)."""

    code: Code
    name_zh: Name
    name_en: Name
    route: Route
    limits: Limits
    work_s: Seconds = 0
    pinyin: Pinyin = ""


class Unit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A city department or utility that handles `categories` in `districts`."""

    code: Code
    name_zh: Name
    name_en: Name
    categories: Annotated[tuple[Code, ...], msgspec.Meta(min_length=1)]
    districts: Annotated[tuple[Code, ...], msgspec.Meta(min_length=1)]
    squad_capacity: Annotated[int, msgspec.Meta(ge=1)] = 1


class Polygon(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A GeoJSON Polygon geometry: outer ring first, then optional holes; `[lon, lat]` pairs."""

    type: Literal["Polygon"]
    coordinates: Annotated[tuple[Ring, ...], msgspec.Meta(min_length=1)]


# dict=True gives the Struct a __dict__ so `cached_property` can memoise the bbox.
class District(msgspec.Struct, frozen=True, forbid_unknown_fields=True, dict=True):
    """An administrative district: its boundary and the depots (lat, lon) where squads start."""

    code: Code
    name_zh: Name
    name_en: Name
    boundary: Polygon
    depots: Annotated[tuple[LatLon, ...], msgspec.Meta(min_length=1)]

    @cached_property
    def bbox(self) -> BBox:
        """(min_lat, min_lon, max_lat, max_lon) of the boundary."""
        lons = [p[0] for ring in self.boundary.coordinates for p in ring]
        lats = [p[1] for ring in self.boundary.coordinates for p in ring]
        return (min(lats), min(lons), max(lats), max(lons))

    def contains(self, lat: float, lon: float) -> bool:
        """True if (lat, lon) lies inside the boundary (holes excluded).

        Points exactly on an edge may fall either way; districts share edges, so a caller
        must not rely on which one wins there.
        """
        min_lat, min_lon, max_lat, max_lon = self.bbox
        if not (min_lat <= lat <= max_lat and min_lon <= lon <= max_lon):
            return False
        # Even-odd rule over all rings: crossing a hole's edge flips the parity back out.
        inside = False
        for ring in self.boundary.coordinates:
            inside ^= _ray_crossings_odd(ring, lon, lat)
        return inside


def _ray_crossings_odd(ring: Ring, x: float, y: float) -> bool:
    """True if a ray from (x, y) towards +x crosses the ring's edges an odd number of times."""
    odd = False
    x1, y1 = ring[-1]
    for x2, y2 in ring:
        # Half-open test on y so a vertex on the ray is counted exactly once.
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            odd = not odd
        x1, y1 = x2, y2
    return odd


DEFAULT_TIMEZONE = "Asia/Shanghai"
"""China Standard Time: the zone of the shipped city, and of any city file that names none."""


class CityInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The `[city]` table. `timezone` (an IANA name) dates the request numbers, so a
    number's day is the city's local day; the loader checks that the zone exists."""

    name_zh: Name
    name_en: Name
    center: LatLon
    timezone: Name = DEFAULT_TIMEZONE


class Demo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The `[demo]` table: how the demo seeds squads."""

    squads_per_unit_per_district: Annotated[int, msgspec.Meta(ge=0)] = 2


class CityFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A whole city TOML file as decoded, before semantic checks."""

    city: CityInfo
    districts: Annotated[tuple[District, ...], msgspec.Meta(min_length=1)]
    units: tuple[Unit, ...]
    categories: Annotated[tuple[Category, ...], msgspec.Meta(min_length=1)]
    demo: Demo = msgspec.field(default_factory=Demo)


class City:
    """Read-only view of a validated city config with O(1) lookups.

    Build it with `server.city.load_city()`; constructing it from a `CityFile` that did not
    pass the loader's checks gives unspecified routing (e.g. `unit_for` picks the last unit).
    All methods are pure and do no I/O.
    """

    __slots__ = ("_bbox", "_by_category", "_by_district", "_by_unit", "_file", "_routing")

    def __init__(self, file: CityFile) -> None:
        self._file = file
        self._by_category = {c.code: c for c in file.categories}
        self._by_unit = {u.code: u for u in file.units}
        self._by_district = {d.code: d for d in file.districts}
        self._routing = {
            (cat, dist): unit
            for unit in file.units
            for cat in unit.categories
            for dist in unit.districts
        }
        boxes = [d.bbox for d in file.districts]
        self._bbox: BBox = (
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )

    @property
    def bbox(self) -> BBox:
        """(min_lat, min_lon, max_lat, max_lon) over all districts."""
        return self._bbox

    @property
    def file(self) -> CityFile:
        """The decoded file this view wraps."""
        return self._file

    @property
    def info(self) -> CityInfo:
        """The `[city]` table."""
        return self._file.city

    @property
    def name_zh(self) -> str:
        return self._file.city.name_zh

    @property
    def name_en(self) -> str:
        return self._file.city.name_en

    @property
    def center(self) -> tuple[float, float]:
        """(lat, lon) of the city centre, e.g. for the initial map view."""
        return self._file.city.center

    @property
    def timezone(self) -> str:
        """IANA zone name, e.g. "Asia/Shanghai"."""
        return self._file.city.timezone

    @property
    def zone(self) -> ZoneInfo:
        """The city's time zone (the loader checked that it exists)."""
        return ZoneInfo(self._file.city.timezone)

    @property
    def demo(self) -> Demo:
        return self._file.demo

    @property
    def districts(self) -> tuple[District, ...]:
        """All districts in file order."""
        return self._file.districts

    @property
    def units(self) -> tuple[Unit, ...]:
        """All units in file order."""
        return self._file.units

    @property
    def categories(self) -> tuple[Category, ...]:
        """All categories in file order."""
        return self._file.categories

    def district(self, code: str) -> District | None:
        return self._by_district.get(code)

    def unit(self, code: str) -> Unit | None:
        return self._by_unit.get(code)

    def category(self, code: str) -> Category | None:
        return self._by_category.get(code)

    def unit_for(self, category_code: str, district_code: str) -> Unit | None:
        """The one unit handling this category in this district.

        None for unknown codes and for police/fire/medical categories (never unit-handled).
        """
        return self._routing.get((category_code, district_code))

    def district_at(self, lat: float, lon: float) -> District | None:
        """The district containing (lat, lon), the first in file order if several do."""
        min_lat, min_lon, max_lat, max_lon = self._bbox
        if not (min_lat <= lat <= max_lat and min_lon <= lon <= max_lon):
            return None
        for district in self._file.districts:
            if district.contains(lat, lon):
                return district
        return None

    def __repr__(self) -> str:
        f = self._file
        return (
            f"City({f.city.name_en!r}, districts={len(f.districts)}, units={len(f.units)}, "
            f"categories={len(f.categories)})"
        )
