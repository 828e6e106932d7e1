"""Load and validate a city TOML file into a `City`.

Two stages: msgspec decodes and checks each field (types, ranges, code syntax, unknown
fields), then `check_city_file` checks the rules that span records. Both raise
`CityConfigError`, so callers handle one exception type for any bad config.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec

from .model import Category, City, CityConfigError, CityFile, District
from .search import syllables_match

__all__ = ["DEFAULT_CITY_PATH", "check_city_file", "load_city", "parse_city"]

DEFAULT_CITY_PATH: Path = Path(__file__).with_name("luoyang.toml")
"""The shipped config (installed as package data next to this module)."""


def load_city(path: str | Path | None = None) -> City:
    """Read, decode and validate a city TOML file; None means the shipped Luoyang config.

    Raises CityConfigError if the file cannot be read, fails to decode, or breaks a rule
    listed in `check_city_file`.
    """
    source = Path(path) if path is not None else DEFAULT_CITY_PATH
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise CityConfigError(f"{source}: cannot read city config: {exc}") from exc
    return parse_city(data, source=str(source))


def parse_city(data: bytes | str, source: str = "<city config>") -> City:
    """Decode and validate TOML text; `source` only prefixes error messages."""
    return City(_checked(data, source))


@functools.lru_cache(maxsize=8)
def _checked(data: bytes | str, source: str) -> CityFile:
    """The decoded, checked file. Kept for the same text (a few configs at most): decoding
    the TOML takes some 15 ms, and a process that starts several apps (the tests) reads the
    same file each time. A CityFile is frozen all the way down, so sharing it is safe; each
    caller still gets its own City."""
    try:
        file = msgspec.toml.decode(data, type=CityFile)
    except msgspec.DecodeError as exc:
        # ValidationError is a DecodeError; its text carries the `$.path` of the bad value.
        raise CityConfigError(f"{source}: {exc}") from exc
    problems = check_city_file(file)
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise CityConfigError(f"{source}: invalid city config:\n{listing}", tuple(problems))
    return file


def check_city_file(file: CityFile) -> list[str]:
    """Every cross-record problem in a decoded file (empty list if it is valid).

    Rules: codes unique per kind; rings closed with >= 4 points; depots inside their own
    district; units name only known categories and districts; police/fire/medical handled by
    no unit; each linkage category handled by exactly one unit in every district, with
    0 < accept_s <= arrive_s <= resolve_s <= promise_max_s and work_s > 0; the time zone
    exists; a category's pinyin, when given, has one syllable per Han character of its name.
    """
    return [
        *_timezone_problems(file),
        *_duplicate_codes(file),
        *_geometry_problems(file.districts),
        *_unit_reference_problems(file),
        *_coverage_problems(file),
        *_linkage_limit_problems(file.categories),
        *_pinyin_problems(file.categories),
    ]


def _timezone_problems(file: CityFile) -> Iterator[str]:
    try:
        ZoneInfo(file.city.timezone)
    # ZoneInfoNotFoundError (a KeyError) for an unknown name; ValueError or OSError for a
    # name that is not a zone key at all ("../x", too long).
    except (KeyError, ValueError, OSError):
        yield f"unknown time zone {file.city.timezone!r}: use an IANA name like 'Asia/Shanghai'"


def _duplicate_codes(file: CityFile) -> Iterator[str]:
    groups = (("district", file.districts), ("unit", file.units), ("category", file.categories))
    for kind, records in groups:
        seen: set[str] = set()
        for record in records:
            if record.code in seen:
                yield f"duplicate {kind} code {record.code!r}"
            seen.add(record.code)


def _geometry_problems(districts: tuple[District, ...]) -> Iterator[str]:
    for district in districts:
        ok = True
        for i, ring in enumerate(district.boundary.coordinates):
            where = f"district {district.code!r} boundary ring {i}"
            if len(ring) < 4:
                ok = False
                yield f"{where} has {len(ring)} points; a polygon ring needs at least 4"
            elif ring[0] != ring[-1]:
                ok = False
                yield f"{where} is not closed: first point {ring[0]} != last point {ring[-1]}"
        # Depot containment is meaningless on a broken ring, so only test it on good ones.
        if ok:
            yield from _depot_problems(district)


def _depot_problems(district: District) -> Iterator[str]:
    for lat, lon in district.depots:
        if not district.contains(lat, lon):
            yield f"district {district.code!r} depot ({lat}, {lon}) lies outside its boundary"


def _unit_reference_problems(file: CityFile) -> Iterator[str]:
    categories = {c.code: c for c in file.categories}
    districts = {d.code for d in file.districts}
    for unit in file.units:
        for code in unit.categories:
            category = categories.get(code)
            if category is None:
                yield f"unit {unit.code!r} names unknown category {code!r}"
            elif category.route != "linkage":
                yield (
                    f"unit {unit.code!r} handles category {code!r}, but its route is "
                    f"{category.route!r}: only linkage categories are dispatched to units"
                )
        for code in unit.districts:
            if code not in districts:
                yield f"unit {unit.code!r} names unknown district {code!r}"


def _coverage_problems(file: CityFile) -> Iterator[str]:
    # handlers[(category, district)] -> unit codes; sets so a repeated entry is not a clash.
    handlers: dict[tuple[str, str], set[str]] = {}
    for unit in file.units:
        for cat in unit.categories:
            for dist in unit.districts:
                handlers.setdefault((cat, dist), set()).add(unit.code)
    for category in _linkage(file.categories):
        for district in file.districts:
            units = sorted(handlers.get((category.code, district.code), ()))
            if not units:
                yield (
                    f"linkage category {category.code!r} has no unit in district {district.code!r}"
                )
            elif len(units) > 1:
                yield (
                    f"linkage category {category.code!r} has more than one unit in district "
                    f"{district.code!r}: {', '.join(units)}"
                )


def _linkage_limit_problems(categories: tuple[Category, ...]) -> Iterator[str]:
    for category in _linkage(categories):
        lim = category.limits
        if not 0 < lim.accept_s <= lim.arrive_s <= lim.resolve_s:
            yield (
                f"linkage category {category.code!r} limits must satisfy "
                f"0 < accept_s <= arrive_s <= resolve_s (got {lim.accept_s}, "
                f"{lim.arrive_s}, {lim.resolve_s})"
            )
        if lim.promise_max_s < lim.resolve_s:
            yield (
                f"linkage category {category.code!r} promise_max_s ({lim.promise_max_s}) must "
                f"be at least resolve_s ({lim.resolve_s})"
            )
        if category.work_s <= 0:
            yield f"linkage category {category.code!r} needs work_s > 0"


def _pinyin_problems(categories: tuple[Category, ...]) -> Iterator[str]:
    for category in categories:
        if category.pinyin and not syllables_match(category.name_zh, category.pinyin):
            yield (
                f"category {category.code!r} pinyin {category.pinyin!r} needs one syllable per "
                f"Han character of {category.name_zh!r}"
            )


def _linkage(categories: tuple[Category, ...]) -> Iterator[Category]:
    return (c for c in categories if c.route == "linkage")
