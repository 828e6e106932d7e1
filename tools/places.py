"""Keep the city's Chinese names findable by pinyin: check and fill the gazetteer
(``server/city/<city>-places.csv``) and the categories' ``pinyin`` of the city file.

    python -m tools.places check [--city server/city/luoyang.toml]
        every pinyin syllable a reading pypinyin knows for its character, every place inside
        the district it names; exit 1 and the list if not
    python -m tools.places fill [--city ...]
        rows of the gazetteer with an empty pinyin or district get pypinyin's reading and the
        district that holds the point; read the new pinyin for polyphones after (长 chang or
        zhang, 朝 chao or zhao, 都 du or dou): pypinyin guesses from its phrase list

pypinyin is a test dependency, not the hub's: the hub reads the stored pinyin.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from pypinyin import Style, lazy_pinyin, pinyin

from server.city import City, load_city
from server.city.places import COLUMNS, district_problems, load_places, places_path

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def readings(character: str) -> set[str]:
    """Every toneless reading pypinyin knows for one Han character ("v" for u-umlaut)."""
    found = pinyin(character, style=Style.NORMAL, heteronym=True, errors="ignore")
    return {reading.replace("ü", "v") for group in found for reading in group}


def pinyin_problems(name_zh: str, syllables: str) -> list[str]:
    """Why ``syllables`` is not a reading of ``name_zh`` (empty: it is one)."""
    characters = _HAN.findall(name_zh)
    spoken = syllables.split()
    if len(spoken) != len(characters):
        return [f"{name_zh}: {len(spoken)} syllables for {len(characters)} characters"]
    return [
        f"{name_zh}: {syllable!r} is not a reading of {character} ({', '.join(sorted(known))})"
        for character, syllable in zip(characters, spoken, strict=True)
        if syllable not in (known := readings(character))
    ]


def guess(name_zh: str) -> str:
    """pypinyin's reading of a name (from its phrase list): check polyphones by hand."""
    return " ".join(s.replace("ü", "v") for s in lazy_pinyin(name_zh, errors="ignore"))


def problems(city_path: Path) -> Iterator[str]:
    city = load_city(city_path)
    for category in city.categories:
        if category.pinyin:
            yield from pinyin_problems(category.name_zh, category.pinyin)
        else:
            yield f"category {category.code}: no pinyin (suggested: {guess(category.name_zh)!r})"
    path = places_path(city_path)
    if path.exists():
        places = load_places(path)
        for place in places.places:
            yield from pinyin_problems(place.name_zh, place.pinyin)
        yield from district_problems(places, city)


def fill(city_path: Path) -> int:
    """Fill empty pinyin and district cells of the gazetteer; the rows changed."""
    city = load_city(city_path)
    path = places_path(city_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    changed = 0
    out = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            out.append(line)
            continue
        row = next(csv.reader([line]))
        if tuple(row) == COLUMNS or len(row) != len(COLUMNS):
            out.append(line)
            continue
        row, was = _filled(row, city), row
        changed += row != was
        out.append(_csv_line(row))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return changed


def _filled(row: list[str], city: City) -> list[str]:
    name_zh, syllables, name_en, kind, district, lat, lon = row
    if not syllables.strip():
        syllables = guess(name_zh)
    if not district.strip():
        found = city.district_at(float(lat), float(lon))
        district = found.code if found else ""
    return [name_zh, syllables, name_en, kind, district, lat, lon]


def _csv_line(row: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(row)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.places", description=__doc__)
    parser.add_argument("command", choices=("check", "fill"))
    parser.add_argument("--city", type=Path, default=Path("server/city/luoyang.toml"))
    args = parser.parse_args(argv)
    if args.command == "fill":
        print(f"{fill(args.city)} rows filled; now run: python -m tools.places check")
        return 0
    found = list(problems(args.city))
    for problem in found:
        print(problem)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
