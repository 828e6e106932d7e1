"""Adding a unit or a squad through the API: what would make the routing ambiguous, or the
record odd, is refused with the field named, and nothing is added."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import auth, desk_auth

UNIT = {
    "code": "water2",
    "name_zh": "第二供水公司",
    "name_en": "Second water company",
    "categories": ["water_outage"],
    "districts": ["laocheng"],
}

pytestmark = pytest.mark.app


@pytest.mark.parametrize(
    ("changes", "status", "field"),
    [
        # laocheng's water outages are the water company's: a second unit would take some
        # of its calls, which ones depending on the order the directory lists the units in
        ({}, 409, "categories"),
        ({"code": "police"}, 422, "code"),  # the name of a route, not of a unit
        ({"categories": ["water_outage", "water_outage"]}, 422, "categories"),
        ({"districts": ["laocheng", "laocheng"]}, 422, "districts"),
    ],
)
async def test_a_unit_that_would_make_the_routing_ambiguous_is_refused(
    app: Any, changes: dict[str, Any], status: int, field: str
) -> None:
    before = (await app.get("/api/v1/units", headers=auth("admin"))).json()
    answer = await app.post("/api/v1/units", headers=auth("admin"), json=UNIT | changes)
    assert answer.status_code == status, answer.text
    assert field in answer.json()["error"]["fields"]
    assert (await app.get("/api/v1/units", headers=auth("admin"))).json() == before
    preview = await app.get("/api/v1/units", headers=auth("center"))
    assert "water2" not in [u["code"] for u in preview.json()]


async def test_a_squads_skills_are_each_named_once(app: Any) -> None:
    answer = await app.post(
        "/api/v1/squads",
        headers=auth("admin"),
        json={"unit": "water", "name": "W", "skills": ["water_outage", "water_outage"]},
    )
    assert answer.status_code == 422 and "skills" in answer.json()["error"]["fields"]


async def test_a_units_roster_by_role(app: Any) -> None:
    """The squads of a unit by name, with what a desk needs to look after them: the admin
    and the center see any unit's (every unit's without one), a desk its own only; a token
    replacement shows who did it; a call-taker, the wall and nobody see none."""
    made = {}
    for unit, name in (("water", "W2 north"), ("water", "W1 south"), ("gas", "G1")):
        answer = await app.post(
            "/api/v1/squads",
            headers=auth("admin"),
            json={"unit": unit, "name": name, "capacity": 2, "skills": []},
        )
        assert answer.status_code == 201, answer.text
        made[name] = answer.json()
    water = await desk_auth(app, "water")
    roster = await app.get("/api/v1/squads", headers=water)
    assert roster.status_code == 200, roster.text
    rows = roster.json()
    assert [row["name"] for row in rows] == ["W1 south", "W2 north"]  # by name, water only
    first = rows[0]
    assert first["id"] == made["W1 south"]["id"] and first["unit"] == "water"
    assert (first["online"], first["on_duty"], first["active"]) == (False, False, 0)
    assert (first["capacity"], first["free_capacity"], first["skills"]) == (2, 2, ["*"])
    assert first["registered_at"] and first["token_replaced_at"] is None
    assert all("token" not in row and "token_hash" not in row for row in rows)

    replaced = await app.post(f"/api/v1/squads/{first['id']}/token", headers=water)
    assert replaced.status_code == 201, replaced.text
    again = (await app.get("/api/v1/squads?unit=water", headers=water)).json()
    assert again[0]["token_replaced_at"] and again[0]["token_replaced_by"] == "unit:desk_water"
    assert replaced.json()["token"] not in roster.text + str(again)

    every = (await app.get("/api/v1/squads", headers=auth("admin"))).json()
    assert {row["name"] for row in every} == {"W1 south", "W2 north", "G1"}
    gas = (await app.get("/api/v1/squads?unit=gas", headers=auth("center"))).json()
    assert [row["name"] for row in gas] == ["G1"]
    for headers, query, status in (
        (water, "?unit=gas", 403),
        (auth("center"), "?unit=nowhere", 422),
        (auth("center"), "?units=water", 422),
        (auth("calltaker"), "", 403),
        (auth("wall"), "", 403),
        ({}, "", 401),
    ):
        answer = await app.get(f"/api/v1/squads{query}", headers=headers)
        assert answer.status_code == status, (query, answer.text)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "crew\x00one",
        "x" * 101,
        # an attacker's trial: a right-to-left override turned the name, and the id beside
        # it, around on the squads page; zero-width and blank letters made an empty row
        "\u202eevil-1 ahtnas",
        "\u200b",
        "\u200b\u200c\ufeff",
        "\u3164",
        "\u2800\u2800",
        "crew\x1b[31m",
        "a" + "\u0301" * 20,
        "---",
    ],
)
async def test_a_squad_needs_a_name_people_can_read(app: Any, name: str) -> None:
    answer = await app.post(
        "/api/v1/squads", headers=auth("admin"), json={"unit": "water", "name": name}
    )
    assert answer.status_code == 422, answer.text
    assert "name" in answer.json()["error"]["fields"]
    assert (await app.get("/api/v1/squads?unit=water", headers=auth("admin"))).json() == []


async def test_a_token_answer_is_kept_by_no_cache(app: Any) -> None:
    """A token is shown once: no cache or proxy on the way may keep a copy."""
    first = await app.post(
        "/api/v1/squads", headers=auth("admin"), json={"unit": "water", "name": "Laocheng 1"}
    )
    assert first.status_code == 201 and first.headers["cache-control"] == "no-store"
    replaced = await app.post(f"/api/v1/squads/{first.json()['id']}/token", headers=auth("admin"))
    assert replaced.headers["cache-control"] == "no-store"
    vietnamese = await app.post(
        "/api/v1/squads", headers=auth("admin"), json={"unit": "water", "name": "Đội Hồ Tây"}
    )
    assert vietnamese.status_code == 201, vietnamese.text  # marks on letters are fine
