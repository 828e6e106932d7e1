"""City config: the shipped Luoyang file is consistent, and bad files fail with clear errors."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from server.city import DEFAULT_CITY_PATH, City, CityConfigError, load_city
from tests.conftest import Apps

NON_LINKAGE = {"police": "police", "fire": "fire", "medical": "medical"}


@pytest.fixture(scope="module")
def city() -> City:
    return load_city()


# --- the shipped file -------------------------------------------------------------------


def test_shipped_file_loads(city: City) -> None:
    assert city.name_en == "Luoyang"
    assert city.timezone == "Asia/Shanghai"
    assert {d.code for d in city.districts} == {
        "laocheng",
        "xigong",
        "chanhe",
        "jianxi",
        "luolong",
        "yanshi",
        "mengjin",
    }
    assert len(city.units) >= 10
    assert len(city.categories) >= 25
    assert city.demo.squads_per_unit_per_district == 2
    # Same result through an explicit path, as str and as Path.
    assert [c.code for c in load_city(str(DEFAULT_CITY_PATH)).categories] == [
        c.code for c in city.categories
    ]


def test_lookups_by_code(city: City) -> None:
    for kind, lookup in (
        ("districts", city.district),
        ("units", city.unit),
        ("categories", city.category),
    ):
        for record in getattr(city, kind):
            assert lookup(record.code) is record
        assert lookup("no_such_code") is None


def test_every_linkage_category_has_exactly_one_unit_per_district(city: City) -> None:
    linkage = [c for c in city.categories if c.route == "linkage"]
    assert linkage
    for category in linkage:
        assert category.work_s > 0
        for district in city.districts:
            handlers = [
                u
                for u in city.units
                if category.code in u.categories and district.code in u.districts
            ]
            assert len(handlers) == 1, (category.code, district.code, handlers)
            assert city.unit_for(category.code, district.code) is handlers[0]


def test_police_fire_medical_have_routes_and_no_unit(city: City) -> None:
    for code, route in NON_LINKAGE.items():
        category = city.category(code)
        assert category is not None and category.route == route
        assert all(code not in u.categories for u in city.units)
        assert all(city.unit_for(code, d.code) is None for d in city.districts)
    assert sum(c.route != "linkage" for c in city.categories) == len(NON_LINKAGE)


def test_each_depot_lies_in_its_own_district(city: City) -> None:
    for district in city.districts:
        assert len(district.depots) >= 2
        for lat, lon in district.depots:
            assert district.contains(lat, lon)
            assert city.district_at(lat, lon) is district, (district.code, lat, lon)


def test_points_outside_the_city(city: City) -> None:
    assert city.district_at(39.9, 116.4) is None  # Beijing
    assert city.district_at(34.75, 113.62) is None  # Zhengzhou, east of Yanshi


def test_known_places_and_bbox(city: City) -> None:
    def code_at(lat: float, lon: float) -> str | None:
        district = city.district_at(lat, lon)
        return district.code if district else None

    assert code_at(34.556, 112.470) == "luolong"  # Longmen Grottoes
    assert code_at(34.681, 112.437) == "xigong"  # Luoyang railway station
    assert code_at(34.682, 112.474) == "laocheng"  # Lijing Gate
    min_lat, min_lon, max_lat, max_lon = city.bbox
    assert min_lat < 34.62 < max_lat and min_lon < 112.45 < max_lon


def test_boundaries_are_closed_geojson_polygons(city: City) -> None:
    for district in city.districts:
        geo = msgspec.json.decode(msgspec.json.encode(district.boundary))
        assert geo["type"] == "Polygon"
        ring = geo["coordinates"][0]
        assert 8 <= len(ring) - 1 <= 20 and ring[0] == ring[-1]


# --- bad files ------------------------------------------------------------------------------

SMALL_CITY = """
[city]
name_zh = "测试市"
name_en = "Testville"
center = [34.5, 112.5]
timezone = "Asia/Shanghai"

[[districts]]
code = "north"
name_zh = "北区"
name_en = "North"
boundary = { type = "Polygon", coordinates = [[
  [112.0, 34.5], [113.0, 34.5], [113.0, 35.0], [112.0, 35.0], [112.0, 34.5],
]] }
depots = [[34.75, 112.5]]

[[districts]]
code = "south"
name_zh = "南区"
name_en = "South"
boundary = { type = "Polygon", coordinates = [[
  [112.0, 34.0], [113.0, 34.0], [113.0, 34.5], [112.0, 34.5], [112.0, 34.0],
]] }
depots = [[34.25, 112.5]]

[[units]]
code = "water"
name_zh = "自来水公司"
name_en = "Water company"
categories = ["water_outage"]
districts = ["north", "south"]

[[categories]]
code = "water_outage"
name_zh = "停水"
name_en = "Water outage"
route = "linkage"
limits = { accept_s = 300, arrive_s = 1800, resolve_s = 14400 }
work_s = 3600

[[categories]]
code = "police"
name_zh = "治安报警"
name_en = "Police"
route = "police"
limits = { accept_s = 60, arrive_s = 0, resolve_s = 0 }
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "city.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _mutate(old: str, new: str) -> str:
    assert SMALL_CITY.count(old) == 1, old  # keep each mutation unambiguous
    return SMALL_CITY.replace(old, new)


def test_timezone_defaults_to_china_standard_time(tmp_path: Path) -> None:
    city = load_city(_write(tmp_path, _mutate('timezone = "Asia/Shanghai"\n', "")))
    assert city.timezone == "Asia/Shanghai" and str(city.zone) == "Asia/Shanghai"


def test_small_city_is_valid(tmp_path: Path) -> None:
    city = load_city(_write(tmp_path, SMALL_CITY))
    assert city.district_at(34.75, 112.5) is city.district("north")
    assert city.district_at(34.25, 112.5) is city.district("south")
    assert city.unit_for("water_outage", "south") is city.unit("water")
    assert city.bbox == (34.0, 112.0, 35.0, 113.0)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "work_s = 3600",
            'work_s = 3600\ncolour = "red"',
            "unknown field `colour`",
            id="unknown-field",
        ),
        pytest.param(
            "accept_s = 300",
            "accept_s = -5",
            "$.categories[0].limits.accept_s",
            id="negative-limit",
        ),
        pytest.param(
            'categories = ["water_outage"]',
            'categories = ["water_outage", "water_burst"]',
            "unit 'water' names unknown category 'water_burst'",
            id="unknown-category",
        ),
        pytest.param(
            'districts = ["north", "south"]',
            'districts = ["north"]',
            "'water_outage' has no unit in district 'south'",
            id="coverage-gap",
        ),
        pytest.param(
            "[112.0, 35.0], [112.0, 34.5],\n]]",
            "[112.0, 35.0],\n]]",
            "district 'north' boundary ring 0 is not closed",
            id="unclosed-ring",
        ),
    ],
)
def test_bad_file_raises_naming_the_problem(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    with pytest.raises(CityConfigError) as info:
        load_city(_write(tmp_path, _mutate(old, new)))
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            'code = "south"',
            'code = "north"',
            "duplicate district code 'north'",
            id="duplicate-code",
        ),
        pytest.param(
            'categories = ["water_outage"]',
            'categories = ["water_outage", "police"]',
            "unit 'water' handles category 'police'",
            id="police-handled-by-unit",
        ),
        pytest.param(
            'districts = ["north", "south"]',
            'districts = ["north", "south"]\n\n[[units]]\ncode = "water2"\n'
            'name_zh = "二水"\nname_en = "Water 2"\ncategories = ["water_outage"]\n'
            'districts = ["south"]',
            "more than one unit in district 'south': water, water2",
            id="ambiguous",
        ),
        pytest.param(
            "[112.0, 34.5], [113.0, 34.5], [113.0, 35.0], [112.0, 35.0], [112.0, 34.5]",
            "[112.0, 34.5], [113.0, 34.5], [112.0, 34.5]",
            "has 3 points; a polygon ring needs at least 4",
            id="short-ring",
        ),
        pytest.param(
            "depots = [[34.75, 112.5]]",
            "depots = [[34.25, 112.5]]",
            "district 'north' depot (34.25, 112.5) lies outside",
            id="depot-outside",
        ),
        pytest.param('code = "water"', 'code = "Water"', "$.units[0].code", id="bad-code"),
        pytest.param(
            'timezone = "Asia/Shanghai"',
            'timezone = "Asia/Luoyang"',
            "unknown time zone 'Asia/Luoyang'",
            id="unknown-timezone",
        ),
        pytest.param(
            "center = [34.5, 112.5]",
            "center = [112.5, 34.5]",
            "$.city.center[0]",
            id="lat-out-of-range",
        ),
        pytest.param(
            "arrive_s = 1800", "arrive_s = 100", "0 < accept_s <= arrive_s", id="limits-order"
        ),
        pytest.param(
            "resolve_s = 14400 }",
            "resolve_s = 14400, promise_max_s = 3600 }",
            "promise_max_s (3600) must be at least resolve_s (14400)",
            id="promise-cap-below-resolve",
        ),
        pytest.param("[city]", "[city", "city.toml", id="toml-syntax"),
    ],
)
def test_more_bad_files(tmp_path: Path, old: str, new: str, expected: str) -> None:
    with pytest.raises(CityConfigError) as info:
        load_city(_write(tmp_path, _mutate(old, new)))
    assert expected in str(info.value)


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    text = _mutate('districts = ["north", "south"]', 'districts = ["north", "east"]')
    with pytest.raises(CityConfigError) as info:
        load_city(_write(tmp_path, text))
    assert info.value.problems == (
        "unit 'water' names unknown district 'east'",
        "linkage category 'water_outage' has no unit in district 'south'",
    )


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CityConfigError, match="cannot read"):
        load_city(tmp_path / "nope.toml")


async def test_the_pages_are_told_the_city_time_zone(apps: Apps, tmp_path: Path) -> None:
    """/city.js carries the city file's zone (the pages show every clock in it), not a fixed
    one; it is public, like the pages' other scripts."""
    shipped = DEFAULT_CITY_PATH.read_text(encoding="utf-8")
    assert shipped.count('timezone = "Asia/Shanghai"') == 1
    elsewhere = tmp_path / "city.toml"
    elsewhere.write_text(shipped.replace('"Asia/Shanghai"', '"Asia/Urumqi"'), encoding="utf-8")
    for config, zone in ((DEFAULT_CITY_PATH, "Asia/Shanghai"), (elsewhere, "Asia/Urumqi")):
        http = await apps.start(config=config)
        script = await http.get("/city.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert script.text == f'window.City = {{"timezone": "{zone}"}};\n'
