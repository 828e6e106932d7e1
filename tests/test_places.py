"""The city's names as a call-taker finds them: the search rule, the shipped gazetteer (every
point inside the district it names, pinyin a real reading of every character), and the
categories' pinyin."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.city import CityConfigError, load_city, parse_city
from server.city.loader import DEFAULT_CITY_PATH
from server.city.places import (
    PlacesError,
    district_problems,
    load_places,
    parse_places,
    places_for_city,
    places_path,
)
from server.city.search import initials, keys_of, match_rank, normalise, search
from tools.places import pinyin_problems, problems

CITY = load_city()
PLACES = places_for_city(None)


# ---- the rule -------------------------------------------------------------------------------


def test_normalise_folds_case_width_separators_and_umlaut() -> None:
    assert normalise(" ＧＳ ") == "gs"
    assert normalise("Xi'an Road") == "xianroad"
    assert normalise("lü") == "lv"
    assert normalise("供水") == "供水"


def test_a_name_is_found_by_chinese_pinyin_initials_and_english() -> None:
    keys = keys_of("供水管道爆裂", "gong shui guan dao bao lie", "Water main burst")
    assert initials("gong shui guan dao bao lie") == "gsgdbl"
    for query in ("gs", "gsg", "gongshui", "gong shui", "供水", "water", "Water main"):
        assert match_rank(normalise(query), keys) == 0, query
    for query in ("管道", "guandao", "gd", "burst", "main"):  # a later syllable or word
        assert match_rank(normalise(query), keys) == 1, query
    for query in ("", "xs", "shuiz", "ater", "停水"):
        assert match_rank(normalise(query), keys) is None, query


def test_starting_matches_rank_before_later_ones_then_the_given_order() -> None:
    names = [
        ("停水", "ting shui", "Water outage"),
        ("供水管道爆裂", "gong shui guan dao bao lie", "Water main burst"),
        ("水质异常", "shui zhi yi chang", "Water quality problem"),
    ]
    found = search("shui", names, lambda n: keys_of(*n), limit=10)
    assert [n[0] for n in found] == ["水质异常", "停水", "供水管道爆裂"]
    assert [n[0] for n in search("water", names, lambda n: keys_of(*n), limit=2)] == [
        "停水",
        "供水管道爆裂",
    ]


def test_gs_finds_water_supply_among_the_categories() -> None:
    categories = list(CITY.categories)
    found = search("gs", categories, lambda c: keys_of(c.name_zh, c.pinyin, c.name_en), 9)
    assert found[0].code == "water_main_burst"  # 供水管道爆裂
    by_english = search("fire", categories, lambda c: keys_of(c.name_zh, c.pinyin, c.name_en), 9)
    assert by_english[0].code == "fire"


# ---- the shipped data -----------------------------------------------------------------------


def test_every_category_of_the_shipped_city_has_its_pinyin() -> None:
    for category in CITY.categories:
        assert category.pinyin, category.code
        assert pinyin_problems(category.name_zh, category.pinyin) == [], category.code


def test_the_shipped_gazetteer_holds_a_few_hundred_places_each_in_its_district() -> None:
    assert places_path(None) == DEFAULT_CITY_PATH.with_name("luoyang-places.csv")
    assert len(PLACES) >= 250
    assert list(district_problems(PLACES, CITY)) == []
    districts = {place.district for place in PLACES.places}
    assert districts == {d.code for d in CITY.districts}  # every district has places
    kinds = {place.kind for place in PLACES.places}
    assert kinds == {"road", "area", "village", "landmark"}
    names = [place.name_zh for place in PLACES.places]
    assert len(names) == len(set(names)), "a name twice: say which one (东段, 村, 镇...)"


def test_the_gazetteer_pinyin_is_a_reading_of_every_character() -> None:
    assert list(problems(DEFAULT_CITY_PATH)) == []  # categories and places, as the tool checks
    assert pinyin_problems("长春路", "zhang chun lu") == []  # a reading, if the wrong one
    assert pinyin_problems("长春路", "chang chun") == ["长春路: 2 syllables for 3 characters"]
    assert "'xiu' is not a reading of 路" in pinyin_problems("长春路", "chang chun xiu")[0]


def test_places_are_found_as_a_call_taker_types_them() -> None:
    def first(query: str) -> str:
        return PLACES.search(query, 5)[0].name_zh

    assert first("丽景") == "丽景门"
    assert first("zzzl") == "中州中路"
    assert first("zhongzhouzhong") == "中州中路"
    assert first("longmen grottoes") == "龙门石窟"
    assert first("baimasi") == "白马寺"  # the shorter name before 白马寺镇
    assert first("jdxl") == "九都西路"  # a polyphone set by hand: du, not dou
    assert first("cyz") == "朝阳镇"  # chao, not zhao
    assert len(PLACES.search("l", 8)) == 8  # bounded
    assert PLACES.search("qqqqq", 8) == []


# ---- a broken file says where ---------------------------------------------------------------

HEADER = "name_zh,pinyin,name_en,kind,district,lat,lon\n"


def test_a_bad_gazetteer_row_is_refused_with_its_line() -> None:
    assert parse_places("# only a comment\n") == []
    good = "王城公园,wang cheng gong yuan,Wangcheng Park,landmark,xigong,34.67,112.43\n"
    assert parse_places(HEADER + good)[0].name_en == "Wangcheng Park"
    cases = {
        "王城公园,wang cheng gong,Wangcheng Park,landmark,xigong,34.67,112.43": "syllable",
        "王城公园,wang cheng gong yuan,Wangcheng Park,castle,xigong,34.67,112.43": "kind",
        "王城公园,wang cheng gong yuan,Wangcheng Park,landmark,xigong,north,112.43": "lat",
        "王城公园,wang cheng gong yuan,Wangcheng Park,landmark,xigong,34.67": "columns",
        "王城公园,Wang Cheng,Wangcheng Park,landmark,xigong,34.67,112.43": "pinyin",
    }
    for row, word in cases.items():
        with pytest.raises(PlacesError, match=r"<places>:3: .*" + word):
            parse_places(HEADER + "# a comment\n" + row + "\n")
    with pytest.raises(PlacesError, match="header"):
        parse_places("name,lat,lon\n")


def test_a_place_outside_its_district_is_named(tmp_path: Path) -> None:
    path = tmp_path / "x-places.csv"
    path.write_text(
        HEADER
        + "王城公园,wang cheng gong yuan,Wangcheng Park,landmark,laocheng,34.6725,112.4365\n"
        + "北京,bei jing,Beijing,area,xigong,39.9,116.4\n",
        encoding="utf-8",
    )
    found = list(district_problems(load_places(path), CITY))
    assert found == [
        "王城公园: (34.6725, 112.4365) lies in xigong, not laocheng",
        "北京: (39.9, 116.4) is outside the city",
    ]


def test_a_city_without_a_gazetteer_has_an_empty_one(tmp_path: Path) -> None:
    assert len(places_for_city(str(tmp_path / "elsewhere.toml"))) == 0


def test_the_city_loader_refuses_a_category_pinyin_of_the_wrong_length() -> None:
    text = DEFAULT_CITY_PATH.read_text(encoding="utf-8").replace(
        'pinyin = "ting shui"', 'pinyin = "ting"', 1
    )
    with pytest.raises(CityConfigError, match="water_outage.*one syllable per Han character"):
        parse_city(text)
