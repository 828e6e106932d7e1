"""The city's gazetteer: named streets, towns, villages and landmarks with a point each, for
the intake console's address look-up (``GET /api/v1/places``). No geocoding service: the
file ships beside the city file (``luoyang.toml`` -> ``luoyang-places.csv``).

The file is CSV (UTF-8) with a header row ``name_zh,pinyin,name_en,kind,district,lat,lon``;
lines starting with ``#`` are comments. Loading checks every row (columns, kind, numbers,
one pinyin syllable per Han character) and raises :class:`PlacesError` naming the line; that
each point lies in the district it names is a check against the city
(:func:`district_problems`), run by the tests and by ``python -m tools.places check``.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from .loader import DEFAULT_CITY_PATH
from .model import City, Code, Pinyin
from .search import SearchKeys, keys_of, search, syllables_match

__all__ = [
    "COLUMNS",
    "Place",
    "Places",
    "PlacesError",
    "district_problems",
    "load_places",
    "parse_places",
    "places_for_city",
    "places_path",
]

COLUMNS = ("name_zh", "pinyin", "name_en", "kind", "district", "lat", "lon")
Kind = Literal["road", "area", "village", "landmark"]


class PlacesError(ValueError):
    """The gazetteer cannot be read, or a row is malformed (the message names the line)."""


class Place(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One named place and its representative point."""

    name_zh: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    pinyin: Pinyin
    name_en: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    kind: Kind
    district: Code
    lat: Annotated[float, msgspec.Meta(ge=-85.05112878, le=85.05112878)]
    lon: Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]


class Places:
    """The gazetteer, searchable by :mod:`server.city.search`'s rule; within a rank the
    shorter name comes first (中州东路 before 中州东路东段), then file order."""

    def __init__(self, places: Sequence[Place]) -> None:
        self.places: tuple[Place, ...] = tuple(places)
        self._ordered = sorted(self.places, key=lambda p: len(p.name_zh))  # stable: file order
        self._keys = {id(p): keys_of(p.name_zh, p.pinyin, p.name_en) for p in self.places}

    def __len__(self) -> int:
        return len(self.places)

    def _keys_of(self, place: Place) -> SearchKeys:
        return self._keys[id(place)]

    def search(self, query: str, limit: int) -> list[Place]:
        """The places matching ``query``, best first, at most ``limit``."""
        return search(query, self._ordered, self._keys_of, limit)


def places_path(city_path: str | Path | None) -> Path:
    """Where the gazetteer of a city file lives: ``<dir>/<stem>-places.csv``."""
    source = Path(city_path) if city_path is not None else DEFAULT_CITY_PATH
    return source.with_name(f"{source.stem}-places.csv")


@functools.cache
def places_for_city(city_path: str | None) -> Places:
    """The gazetteer beside the city file (None: the shipped city), read once per process;
    a city without one has an empty gazetteer. Raises PlacesError for a broken file."""
    path = places_path(city_path)
    return load_places(path) if path.exists() else Places(())


def load_places(path: str | Path) -> Places:
    try:
        data = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlacesError(f"{path}: cannot read the gazetteer: {exc}") from exc
    return Places(parse_places(data, source=str(path)))


def parse_places(data: str, source: str = "<places>") -> list[Place]:
    """Every row of a gazetteer file. Raises PlacesError at the first bad line."""
    numbered = [
        (number, line)
        for number, line in enumerate(data.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not numbered:
        return []
    header = next(csv.reader([numbered[0][1]]))
    if tuple(header) != COLUMNS:
        raise PlacesError(f"{source}:{numbered[0][0]}: the header must be {','.join(COLUMNS)}")
    places = []
    for number, line in numbered[1:]:
        row = next(csv.reader(io.StringIO(line)))
        places.append(_place(row, f"{source}:{number}"))
    return places


def _place(row: list[str], where: str) -> Place:
    if len(row) != len(COLUMNS):
        raise PlacesError(f"{where}: {len(row)} columns, expected {len(COLUMNS)}")
    try:
        place = msgspec.convert(dict(zip(COLUMNS, row, strict=True)), Place, strict=False)
    except msgspec.ValidationError as exc:
        raise PlacesError(f"{where}: {exc}") from None
    if not syllables_match(place.name_zh, place.pinyin):
        raise PlacesError(
            f"{where}: pinyin {place.pinyin!r} needs one syllable per Han character of "
            f"{place.name_zh!r}"
        )
    return place


def district_problems(places: Places, city: City) -> Iterator[str]:
    """Places whose point lies outside the city, or in another district than they name."""
    for place in places.places:
        found = city.district_at(place.lat, place.lon)
        if found is None:
            yield f"{place.name_zh}: ({place.lat}, {place.lon}) is outside the city"
        elif found.code != place.district:
            yield (
                f"{place.name_zh}: ({place.lat}, {place.lon}) lies in {found.code}, "
                f"not {place.district}"
            )
