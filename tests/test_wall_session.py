"""A wall display signs in once: its session lasts DISPATCH_WALL_SESSION_DAYS (a person's,
DISPATCH_SESSION_HOURS); signing out still ends it at once."""

from __future__ import annotations

import re
import time

import httpx

from tests.conftest import Apps, auth


async def _sign_in(http: httpx.AsyncClient, role: str) -> httpx.Response:
    username = f"{role}-screen"
    created = await http.post(
        "/api/v1/accounts",
        headers=auth("admin"),
        json={"username": username, "name": "Screen", "role": role, "password": "a long password"},
    )
    assert created.status_code == 201, created.text
    answer = await http.post(
        "/api/v1/session", json={"username": username, "password": "a long password"}
    )
    assert answer.status_code == 200, answer.text
    return answer


def _max_age(answer: httpx.Response) -> int:
    found = re.search(r"Max-Age=(\d+)", answer.headers["set-cookie"], re.I)
    assert found, answer.headers["set-cookie"]
    return int(found.group(1))


async def test_a_wall_stays_signed_in_for_days_a_person_for_hours(apps: Apps) -> None:
    http = await apps.start(wall_session_days=30, session_hours=8)
    wall = await _sign_in(http, "wall")
    assert _max_age(wall) == 30 * 86_400
    assert abs(wall.json()["expires_at"] - (time.time() + 30 * 86_400)) < 60
    http.cookies.clear()
    person = await _sign_in(http, "calltaker")
    assert _max_age(person) == 8 * 3600
    http.cookies.clear()

    cookie = {"Cookie": f"ld_session={wall.cookies['ld_session']}"}
    assert (await http.get("/wall.html", headers=cookie)).status_code == 200
    assert (await http.delete("/api/v1/session", headers=cookie)).status_code == 204
    assert (await http.get("/wall.html", headers=cookie)).status_code == 303
