"""Adding a unit or a squad through the API: what would make the routing ambiguous, or the
record odd, is refused with the field named, and nothing is added."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import auth

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
