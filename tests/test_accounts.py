"""Accounts for people: the pure parts, the store on SQLite and PostgreSQL, and real hub
processes (bootstrap accounts, the admin endpoints, unit desks, sessions, throttling, thirty
call-takers signing in at once, the command line)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync

from server.accounts.__main__ import text_table
from server.accounts.asgi import safe_next
from server.accounts.model import (
    FailureWindow,
    Principal,
    TtlCache,
    bootstrap_username,
    secret_hash,
    unit_problems,
)
from server.accounts.passwords import hash_password, verify_password
from server.accounts.store import AccountStore, UsernameTaken
from server.ledger import Ledger, default_database_url
from server.settings import Settings, SettingsError
from server.store.embedded import EmbeddedRedis
from tests.conftest import ROOT, HubProcess, Hubs
from tests.helpers import XIGONG, auth, eventually

PASSWORD = "correct horse battery"
NEW_REQUEST = {
    "caller_phone": "13800000000",
    "category": "water_main_burst",
    "description": "pipe burst",
    "lat": XIGONG[0],
    "lon": XIGONG[1],
}


# ---- the pure part ------------------------------------------------------------------------


def test_failure_window_blocks_past_the_limit_until_the_oldest_failure_leaves() -> None:
    window = FailureWindow(limit=3, window_s=60)
    for at in (0.0, 10.0):
        window.record("10.0.0.1", at)
    assert window.retry_after("10.0.0.1", 11.0) is None
    window.record("10.0.0.1", 20.0)
    assert window.retry_after("10.0.0.1", 21.0) == pytest.approx(39.0)
    assert window.retry_after("10.0.0.2", 21.0) is None  # per address
    assert window.retry_after("10.0.0.1", 60.5) is None  # the failure at 0 left the window


def test_failure_window_memory_is_bounded() -> None:
    window = FailureWindow(limit=2, window_s=60, addresses=100)
    for i in range(1000):
        window.record(f"10.0.{i // 256}.{i % 256}", float(i))
    assert len(window._failures) <= 100


def test_ttl_cache_forgets_after_its_time_and_when_told() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=30, size=2)
    cache.put("a", 1, now=0)
    assert cache.get("a", now=29.9) == 1 and cache.get("a", now=30) is None
    cache.put("a", 1, now=0)
    cache.drop("a")
    assert cache.get("a", now=1) is None
    for key in "xyz":
        cache.put(key, 0, now=0)
    assert len(cache) == 2 and cache.get("x", now=1) is None  # the oldest went first


def test_a_unit_belongs_to_a_unit_desk_only() -> None:
    assert unit_problems("unit", "water", unit_exists=True) == {}
    assert unit_problems("unit", None, unit_exists=False) == {"unit": "required for role unit"}
    assert unit_problems("unit", "nope", unit_exists=False) == {"unit": "no unit nope"}
    assert "only role unit" in unit_problems("calltaker", "water", unit_exists=True)["unit"]
    assert unit_problems("center", None, unit_exists=False) == {}


def test_principal_actor_names_the_person() -> None:
    actor = Principal("alice", "calltaker").actor()
    assert actor.label() == "calltaker:alice"
    desk = Principal("desk1", "unit", "water").actor()
    assert (desk.label(), desk.unit) == ("unit:desk1", "water")
    assert bootstrap_username("unit", "street_lights") == "bootstrap-unit-street-lights"


def test_next_page_stays_on_this_site() -> None:
    assert safe_next("/wall.html?lang=en") == "/wall.html?lang=en"
    for bad in (
        "//evil.example",
        "https://evil.example/",
        "/\\evil.example",
        "wall.html",
        "",
        None,
        "/\x00x",
        "javascript:alert(1)",
    ):
        assert safe_next(bad) == "/", bad


def test_a_text_table_pads_each_column_to_its_widest_cell() -> None:
    """Chinese characters take two columns of a terminal; the last column is not padded."""
    lines = text_table(
        ("UNIT", "DESK", "N"), [("water", "供水值班台", "12"), ("gas", "gas desk", "3")]
    )
    assert lines == [
        "UNIT   DESK        N",
        "water  供水值班台  12",
        "gas    gas desk    3",
    ]
    assert text_table(("A", "B"), []) == ["A  B"]


def test_dispatch_tokens_take_unit_desks() -> None:
    settings = Settings(tokens="admin:adm-12345678,unit=water:wat-12345678")
    assert settings.bootstrap_tokens() == [
        ("admin", "", "adm-12345678"),
        ("unit", "water", "wat-12345678"),
    ]
    assert settings.role_tokens() == {"adm-12345678": "admin", "wat-12345678": "unit"}
    for bad in ("unit:wat-12345678", "admin=water:adm-12345678", "unit=Water:wat-12345678"):
        with pytest.raises(SettingsError):
            Settings(tokens=bad).bootstrap_tokens()


def test_password_hashes_verify_and_say_when_to_rehash() -> None:
    stored = hash_password(PASSWORD)
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert verify_password(stored, PASSWORD) == (True, None)
    assert verify_password(stored, "wrong password") == (False, None)
    assert verify_password(None, PASSWORD) == (False, None)
    # A hash made with weaker parameters is replaced on the next good sign-in.
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORD)
    ok, rehashed = verify_password(weak, PASSWORD)
    assert ok and rehashed is not None and rehashed != weak


# ---- the store, on SQLite and PostgreSQL --------------------------------------------------


@pytest.fixture
async def store(ledger: Ledger) -> AccountStore:
    """The accounts in the ledger's database, on SQLite and PostgreSQL."""
    return await AccountStore.open(ledger.engine)


async def test_store_keeps_people_tokens_sessions_and_their_history(
    store: AccountStore,
) -> None:
    await store.create("alice", "Alice", "calltaker", None, hash_password(PASSWORD), "admin:bob")
    with pytest.raises(UsernameTaken):
        await store.create("alice", "Other", "center", None, None, "admin:bob")
    token_id, token = await store.add_token("alice", "phone", "admin:bob")
    assert await store.by_token_hash(secret_hash(token)) == Principal(
        "alice", "calltaker", "", "Alice"
    )
    session, _expires = await store.open_session("alice", 3600)
    found = await store.by_session_hash(secret_hash(session))
    assert found is not None and found[0].username == "alice"
    await store.end_session(secret_hash(session))
    assert await store.by_session_hash(secret_hash(session)) is None
    assert await store.revoke_token("alice", token_id, "admin:bob") == secret_hash(token)
    assert await store.by_token_hash(secret_hash(token)) is None
    _, second = await store.add_token("alice", "desk", "admin:bob")
    assert await store.disable("alice", "admin:bob")
    assert await store.by_token_hash(secret_hash(second)) is None
    assert await store.principal("alice") is None
    # Several hubs creating the same bootstrap account at once: one row, one record.
    made = await asyncio.gather(
        *(store.ensure_bootstrap("bootstrap-admin", "b", "admin", "") for _ in range(5))
    )
    assert made.count(True) == 1
    history = [(e["by"], e["action"], e["username"]) for e in await store.history()]
    assert history == [
        ("admin:bob", "created", "alice"),
        ("admin:bob", "token_added", "alice"),
        ("admin:bob", "token_revoked", "alice"),
        ("admin:bob", "token_added", "alice"),
        ("admin:bob", "disabled", "alice"),
        ("system:bootstrap", "created", "bootstrap-admin"),
    ]
    listed = {a["username"]: a for a in await store.everyone()}
    assert "password_hash" not in listed["alice"] and len(listed["alice"]["tokens"]) == 2
    assert all("token_hash" not in t for t in listed["alice"]["tokens"])


# ---- real hubs ----------------------------------------------------------------------------


@pytest.fixture
def hubs(embedded_redis: EmbeddedRedis, tmp_path: Path) -> Iterator[Hubs]:
    """Hubs on the embedded Redis only: accounts do not depend on the Redis version."""
    client = redis_sync.Redis.from_url(embedded_redis.url)
    client.flushdb()
    client.close()
    manager = Hubs(embedded_redis.url, tmp_path)
    yield manager
    for hub in manager.started:
        hub.stop()


@pytest.fixture
async def http(hubs: Hubs) -> AsyncIterator[httpx.AsyncClient]:
    hub = hubs.start()
    async with httpx.AsyncClient(base_url=hub.http, timeout=30) as client:
        yield client


async def _account(
    http: httpx.AsyncClient, username: str, role: str = "calltaker", **extra: Any
) -> dict[str, Any]:
    response = await http.post(
        "/api/v1/accounts",
        headers=auth("admin"),
        json={
            "username": username,
            "name": username.title(),
            "role": role,
            "password": PASSWORD,
            **extra,
        },
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def _token(http: httpx.AsyncClient, username: str) -> str:
    response = await http.post(
        f"/api/v1/accounts/{username}/tokens", headers=auth("admin"), json={"label": "test"}
    )
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"  # shown once: kept by no cache
    return str(response.json()["token"])


def _cookie(session: str) -> dict[str, str]:
    return {"Cookie": f"ld_session={session}"}


async def _received_by(http: httpx.AsyncClient, headers: dict[str, str]) -> str:
    created = await http.post("/api/v1/requests", json=NEW_REQUEST, headers=headers)
    assert created.status_code == 201, created.text
    detail = await http.get(f"/api/v1/requests/{created.json()['id']}", headers=auth("center"))
    return str(next(e["by"] for e in detail.json()["timeline"] if e["type"] == "received"))


async def test_dispatch_tokens_are_bootstrap_accounts(http: httpx.AsyncClient) -> None:
    assert await _received_by(http, auth("calltaker")) == "calltaker:bootstrap-calltaker"
    listed = await http.get("/api/v1/accounts", headers=auth("admin"))
    names = {a["username"]: a for a in listed.json()}
    assert {"bootstrap-admin", "bootstrap-calltaker", "bootstrap-center", "bootstrap-wall"} <= set(
        names
    )
    assert names["bootstrap-center"]["created_by"] == "system:bootstrap"
    # A bootstrap account has no password: it cannot sign in with one.
    refused = await http.post(
        "/api/v1/session", json={"username": "bootstrap-admin", "password": "anything at all"}
    )
    assert refused.status_code == 401


async def test_admin_creates_people_and_their_tokens(http: httpx.AsyncClient) -> None:
    created = await _account(http, "alice")
    assert created["username"] == "alice" and created["created_by"] == "admin:bootstrap-admin"
    assert "password" not in str(created)
    again = await http.post(
        "/api/v1/accounts",
        headers=auth("admin"),
        json={"username": "alice", "name": "A", "role": "center", "password": PASSWORD},
    )
    assert again.status_code == 409 and again.json()["error"]["fields"] == {
        "username": "already taken"
    }
    invalid = {
        "password": {"username": "bob", "name": "B", "role": "center", "password": "short"},
        "username": {"username": "Bob Smith", "name": "B", "role": "center", "password": PASSWORD},
        "role": {"username": "bob", "name": "B", "role": "king", "password": PASSWORD},
        "unit": {"username": "bob", "name": "B", "role": "unit", "password": PASSWORD},
    }
    for field, body in invalid.items():
        response = await http.post("/api/v1/accounts", headers=auth("admin"), json=body)
        assert response.status_code == 422, response.text
        assert field in response.json()["error"]["fields"], response.text
    for unit_body in ({"role": "unit", "unit": "nope"}, {"role": "center", "unit": "water"}):
        response = await http.post(
            "/api/v1/accounts",
            headers=auth("admin"),
            json={"username": "bob", "name": "B", "password": PASSWORD, **unit_body},
        )
        assert response.status_code == 422 and "unit" in response.json()["error"]["fields"]
    # Only an admin manages accounts; nobody without credentials.
    assert (await http.get("/api/v1/accounts", headers=auth("center"))).status_code == 403
    assert (await http.get("/api/v1/accounts")).status_code == 401

    token = await _token(http, "alice")
    alice = {"Authorization": f"Bearer {token}"}
    assert await _received_by(http, alice) == "calltaker:alice"
    assert (await http.get("/api/v1/ledger/requests", headers=alice)).status_code == 403
    listed = (await http.get("/api/v1/accounts", headers=auth("admin"))).json()
    mine = next(a for a in listed if a["username"] == "alice")
    assert token not in str(listed) and mine["tokens"][0]["label"] == "test"
    revoked = await http.delete(
        f"/api/v1/accounts/alice/tokens/{mine['tokens'][0]['id']}", headers=auth("admin")
    )
    assert revoked.status_code == 204
    assert (await http.post("/api/v1/requests", json=NEW_REQUEST, headers=alice)).status_code == 401
    missing = await http.delete("/api/v1/accounts/alice/tokens/Tnope", headers=auth("admin"))
    assert missing.status_code == 404

    # Disabling stops its tokens and sessions (on this hub at once).
    second = {"Authorization": f"Bearer {await _token(http, 'alice')}"}
    signed_in = await http.post("/api/v1/session", json={"username": "alice", "password": PASSWORD})
    assert signed_in.status_code == 200
    assert (await http.get("/api/v1/session", headers=second)).status_code == 200
    disabled = await http.post("/api/v1/accounts/alice/disable", headers=auth("admin"))
    assert disabled.status_code == 200
    assert (await http.get("/api/v1/session", headers=second)).status_code == 401
    session = signed_in.cookies["ld_session"]
    assert (await http.get("/api/v1/session", headers=_cookie(session))).status_code == 401
    assert (
        await http.post("/api/v1/session", json={"username": "alice", "password": PASSWORD})
    ).status_code == 401


async def test_a_unit_desk_sees_only_its_unit(http: httpx.AsyncClient) -> None:
    await _account(http, "water-desk", role="unit", unit="water")
    desk = {"Authorization": f"Bearer {await _token(http, 'water-desk')}"}
    water = await http.post("/api/v1/requests", json=NEW_REQUEST, headers=auth("calltaker"))
    power = await http.post(
        "/api/v1/requests",
        headers=auth("calltaker"),
        json=NEW_REQUEST | {"category": "power_outage"},
    )
    water_id, power_id = water.json()["id"], power.json()["id"]
    assert (await http.get(f"/api/v1/requests/{water_id}", headers=desk)).status_code == 200
    other = await http.get(f"/api/v1/requests/{power_id}", headers=desk)
    assert other.status_code == 403 and other.json()["error"]["code"] == "forbidden"
    assert (await http.get("/api/v1/units", headers=desk)).status_code == 200

    async def recorded() -> bool:
        rows = (await http.get("/api/v1/ledger/requests", headers=auth("center"))).json()
        return {water_id, power_id} <= {r["id"] for r in rows}

    await eventually(recorded)
    mine = (await http.get("/api/v1/ledger/requests", headers=desk)).json()
    assert [r["id"] for r in mine] == [water_id]
    assert (await http.get("/api/v1/ledger/requests?unit=power", headers=desk)).status_code == 403
    assert (
        await http.get(f"/api/v1/ledger/requests/{power_id}/events", headers=desk)
    ).status_code == 403
    assert (
        await http.get(f"/api/v1/ledger/requests/{water_id}/events", headers=desk)
    ).status_code == 200
    export = await http.get("/api/v1/ledger/export.csv", headers=desk)
    assert water_id in export.text and power_id not in export.text
    # Routes that do not name the unit role refuse a desk.
    assert (await http.post("/api/v1/requests", json=NEW_REQUEST, headers=desk)).status_code == 403
    assert (await http.get("/api/v1/map", headers=desk)).status_code == 403


async def test_sessions_cookie_flags_who_am_i_and_sign_out(hubs: Hubs) -> None:
    hub = hubs.start()
    async with httpx.AsyncClient(base_url=hub.http, timeout=30) as http:
        await _account(http, "carol", role="center")
        wrong = await http.post(
            "/api/v1/session", json={"username": "carol", "password": "wrong password"}
        )
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
        unknown = await http.post(
            "/api/v1/session", json={"username": "nobody", "password": PASSWORD}
        )
        assert unknown.status_code == 401 and unknown.json() == wrong.json()
        signed_in = await http.post(
            "/api/v1/session", json={"username": "carol", "password": PASSWORD}
        )
        assert signed_in.status_code == 200
        assert signed_in.json()["username"] == "carol" and signed_in.json()["role"] == "center"
        cookie = signed_in.headers["set-cookie"]
        assert cookie.startswith("ld_session=")
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/"} <= flags and "secure" not in flags
        session = signed_in.cookies["ld_session"]
        http.cookies.clear()  # sent explicitly below
        me = await http.get("/api/v1/session", headers=_cookie(session))
        assert me.json()["username"] == "carol" and me.json()["via"] == "cookie"
        ledger = await http.get("/api/v1/ledger/requests", headers=_cookie(session))
        assert ledger.status_code == 200
        # A cookie on a request from another site's page does not count.
        cross = await http.post(
            "/api/v1/requests",
            json=NEW_REQUEST,
            headers=_cookie(session) | {"Origin": "https://evil.example"},
        )
        assert cross.status_code == 401
        out = await http.delete("/api/v1/session", headers=_cookie(session))
        assert out.status_code == 204 and "ld_session=" in out.headers["set-cookie"]
        after = await http.get("/api/v1/session", headers=_cookie(session))
        assert after.status_code == 401
    secure = hubs.start(cookie_secure=1)
    async with httpx.AsyncClient(base_url=secure.http, timeout=30) as http:
        signed_in = await http.post(
            "/api/v1/session", json={"username": "carol", "password": PASSWORD}
        )
        assert "secure" in signed_in.headers["set-cookie"].lower()


async def test_a_sign_in_from_another_sites_page_is_refused(http: httpx.AsyncClient) -> None:
    """Login CSRF: another site's page can post a text/plain form whose body reads as JSON,
    and would sign the visitor's browser in as someone else. Only our own page's JSON,
    from our own origin, signs in."""
    await _account(http, "erin", role="center")
    body = json.dumps({"username": "erin", "password": PASSWORD})
    as_form = await http.post(
        "/api/v1/session", content=body, headers={"Content-Type": "text/plain"}
    )
    assert as_form.status_code == 415 and "set-cookie" not in as_form.headers
    assert as_form.json()["error"]["fields"] == {"content-type": "must be application/json"}
    unlabelled = await http.post("/api/v1/session", content=body)
    assert unlabelled.status_code == 415
    json_type = {"Content-Type": "application/json; charset=utf-8"}
    for foreign in ({"Origin": "https://evil.example"}, {"Origin": "null"}):
        cross = await http.post("/api/v1/session", content=body, headers=json_type | foreign)
        assert cross.status_code == 403 and "set-cookie" not in cross.headers
        assert cross.json()["error"]["code"] == "cross_site"
    fetched = await http.post(
        "/api/v1/session", content=body, headers=json_type | {"Sec-Fetch-Site": "cross-site"}
    )
    assert fetched.status_code == 403
    host = http.base_url.netloc.decode()
    ours = await http.post(
        "/api/v1/session",
        content=body,
        headers=json_type | {"Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"},
    )
    assert ours.status_code == 200 and ours.cookies["ld_session"]


async def test_a_session_is_no_token_and_a_token_no_session(http: httpx.AsyncClient) -> None:
    """Each credential counts only as what it was given as, even while the hub trusts it
    from its cache (a session id sent as a bearer token, a token sent as the cookie)."""
    await _account(http, "fay", role="center")
    signed_in = await http.post("/api/v1/session", json={"username": "fay", "password": PASSWORD})
    session = signed_in.cookies["ld_session"]
    http.cookies.clear()
    assert (await http.get("/api/v1/session", headers=_cookie(session))).status_code == 200
    as_token = await http.get("/api/v1/session", headers={"Authorization": f"Bearer {session}"})
    assert as_token.status_code == 401
    token = await _token(http, "fay")
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await http.get("/api/v1/session", headers=bearer)).json()["via"] == "token"
    assert (await http.get("/api/v1/session", headers=_cookie(token))).status_code == 401
    page = await http.get("/center.html", headers=_cookie(token))
    assert page.status_code != 200


async def test_wrong_credentials_from_one_address_get_429(hubs: Hubs) -> None:
    hub = hubs.start(auth_failures_per_min=5)
    async with httpx.AsyncClient(base_url=hub.http, timeout=30) as http:
        assert (await http.get("/api/v1/units", headers=auth("center"))).status_code == 200
        for i in range(5):
            wrong = await http.get("/api/v1/units", headers={"Authorization": f"Bearer bad-{i}"})
            assert wrong.status_code == 401
        blocked = await http.get("/api/v1/units", headers={"Authorization": "Bearer bad-x"})
        assert blocked.status_code == 429 and 0 < int(blocked.headers["retry-after"]) <= 60
        password = await http.post(
            "/api/v1/session", json={"username": "bootstrap-admin", "password": "guess guess guess"}
        )
        assert password.status_code == 429 and "retry-after" in password.headers
        # A credential verified just before keeps working (a shared address is not locked).
        assert (await http.get("/api/v1/units", headers=auth("center"))).status_code == 200


async def test_thirty_calltakers_sign_in_at_once(http: httpx.AsyncClient) -> None:
    names = [f"seat-{i:02d}" for i in range(30)]
    await asyncio.gather(*(_account(http, name) for name in names))

    async def seat(name: str) -> str:
        async with httpx.AsyncClient(base_url=str(http.base_url), timeout=60) as own:
            signed_in = await own.post(
                "/api/v1/session", json={"username": name, "password": PASSWORD}
            )
            assert signed_in.status_code == 200, signed_in.text
            assert "ld_session" in own.cookies  # the client keeps it, as a browser would
            created = await own.post("/api/v1/requests", json=NEW_REQUEST)
            assert created.status_code == 201, created.text
        # The center's read on a connection of its own: the shared client's pooled
        # connections sit idle while thirty seats hash their passwords, and one the hub closes
        # at its keep-alive timeout as the client reuses it fails with no answer.
        async with httpx.AsyncClient(
            base_url=str(http.base_url), timeout=60, headers=auth("center")
        ) as center:
            detail = await center.get(f"/api/v1/requests/{created.json()['id']}")
        return str(detail.json()["timeline"][0]["by"])

    recorded = await asyncio.gather(*(seat(name) for name in names))
    assert recorded == [f"calltaker:{name}" for name in names]


def _cli(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DISPATCH_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "server.accounts", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


async def test_command_line_accounts_sign_in_through_a_hub(hubs: Hubs, tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    made = _cli(
        data_dir,
        "create",
        "--username",
        "dora",
        "--name",
        "Dora Desk",
        "--role",
        "unit",
        "--unit",
        "water",
        stdin=PASSWORD + "\n",
    )
    assert made.returncode == 0, made.stderr
    short = _cli(
        data_dir, "create", "--username", "eve", "--name", "Eve", "--role", "admin", stdin="short\n"
    )
    assert short.returncode == 1 and "password" in short.stderr
    taken = _cli(
        data_dir,
        "create",
        "--username",
        "dora",
        "--name",
        "D",
        "--role",
        "wall",
        stdin=PASSWORD + "\n",
    )
    assert taken.returncode == 1 and "taken" in taken.stderr
    hub: HubProcess = hubs.start(auth_cache_s=0.5)
    async with httpx.AsyncClient(base_url=hub.http, timeout=30) as http:
        signed_in = await http.post(
            "/api/v1/session", json={"username": "dora", "password": PASSWORD}
        )
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.json()["unit"] == "water"
        issued = _cli(data_dir, "token", "dora", "--label", "phone")
        assert issued.returncode == 0, issued.stderr
        desk = {"Authorization": f"Bearer {issued.stdout.strip()}"}
        assert (await http.get("/api/v1/session", headers=desk)).json()["username"] == "dora"
        listed = _cli(data_dir, "list")
        assert "dora" in listed.stdout and "unit (water)" in listed.stdout
        assert issued.stdout.strip() not in listed.stdout
        assert _cli(data_dir, "disable", "dora").returncode == 0

        async def refused() -> bool:
            return (await http.get("/api/v1/session", headers=desk)).status_code == 401

        await eventually(refused, timeout_s=5)  # within the cache time of 0.5 s
    ledger = await Ledger.open(default_database_url(data_dir))
    try:
        history = await (await AccountStore.open(ledger.engine)).history("dora")
    finally:
        await ledger.close()
    assert [(e["by"].partition(":")[0], e["action"]) for e in history] == [
        ("cli", "created"),
        ("cli", "token_added"),
        ("cli", "disabled"),
    ]


@pytest.mark.redis  # a real database (SQLite), read by the command in its own process
async def test_the_command_line_lists_accounts_in_aligned_columns(tmp_path: Path) -> None:
    ledger = await Ledger.open(default_database_url(tmp_path))
    try:
        store = await AccountStore.open(ledger.engine)
        await store.create("al", "Al", "calltaker", None, None, "admin:bob")
        await store.create("water-night-desk", "供水夜班", "unit", "water", None, "cli:root")
        await store.create("wall", "Wall display", "wall", None, None, "system:bootstrap")
        await store.add_token("al", "phone", "admin:bob")
        await store.disable("wall", "admin:bob")
    finally:
        await ledger.close()
    listed = _cli(tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]  # "CREATED (UTC)": one
    assert [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)] == [
        "USERNAME",
        "ROLE",
        "STATE",
        "TOKENS",
        "CREATED (UTC)",
        "BY",
        "NAME",
    ]
    cells = {}
    for row in rows:
        assert row == row.rstrip()
        for start in starts[1:]:  # every column starts where its heading does
            assert row[start - 2 : start] == "  " and row[start] != " ", (row, start)
        cut = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        cells[cut[0]] = cut[1:4] + cut[5:]
    assert cells == {
        "al": ["calltaker", "active", "1", "admin:bob", "Al"],
        "wall": ["wall", "disabled", "0", "system:bootstrap", "Wall display"],
        "water-night-desk": ["unit (water)", "active", "0", "cli:root", "供水夜班"],
    }


@pytest.mark.app
async def test_an_unreachable_accounts_database_is_a_503_not_a_500() -> None:
    """In process: the middleware over a database nobody listens on."""
    from types import SimpleNamespace

    from sqlalchemy.ext.asyncio import create_async_engine
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from server.accounts.asgi import AuthMiddleware
    from server.accounts.auth import Authenticator

    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    app = Starlette(
        routes=[Route("/", lambda _: PlainTextResponse("open"))],
        middleware=[Middleware(AuthMiddleware)],
    )
    app.state.components = SimpleNamespace(
        auth=Authenticator(AccountStore(engine), {}, cache_s=30, failures_per_min=20)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        assert (await client.get("/")).text == "open"  # no credentials: nothing to look up
        answer = await client.get("/", headers={"Authorization": "Bearer some-token"})
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert answer.json()["error"]["code"] == "unavailable"
    await engine.dispose()
