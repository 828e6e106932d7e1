"""Helpers for tests that drive real hub processes over HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
from redis.asyncio import BlockingConnectionPool, Redis

from dispatch_field.client import FieldClient
from server.store.round_trips import RoundTrips, count_round_trips
from tests.conftest import TOKENS, HubProcess

T = TypeVar("T")

# A point in Xigong district (central Luoyang) and a water category.
XIGONG = (34.670, 112.445)


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


async def desk_token(http: httpx.AsyncClient, unit: str) -> str:
    """A new API token of ``unit``'s desk: an account of role ``unit``, made by the admin on
    the first call for the unit (a later call reuses it)."""
    username = f"desk_{unit}"
    created = await http.post(
        "/api/v1/accounts",
        headers=auth("admin"),
        json={
            "username": username,
            "name": f"{unit} desk",
            "role": "unit",
            "unit": unit,
            "password": "a long enough password",
        },
    )
    assert created.status_code in (201, 409), created.text
    token = await http.post(
        f"/api/v1/accounts/{username}/tokens", headers=auth("admin"), json={"label": "test"}
    )
    assert token.status_code == 201, token.text
    return str(token.json()["token"])


async def desk_auth(http: httpx.AsyncClient, unit: str) -> dict[str, str]:
    """A unit desk's bearer header (:func:`desk_token`)."""
    return {"Authorization": f"Bearer {await desk_token(http, unit)}"}


async def ends_by_itself(task: asyncio.Task[Any], timeout_s: float = 2.0) -> None:
    """``task`` ends on its own within ``timeout_s`` (its result, or its exception, raised).
    Not ``wait_for``: a field session closed by the hub swallows the cancellation of a
    timeout, so ``wait_for`` would return all the same once the time is up."""
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    assert done, f"{task.get_name()} did not end by itself in {timeout_s} s"
    task.result()


async def eventually(
    check: Callable[[], Awaitable[T]], timeout_s: float = 10.0, interval_s: float = 0.02
) -> T:
    """Poll ``check`` until it returns a truthy value (returned) or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout_s}s; last value: {value!r}")
        await asyncio.sleep(interval_s)


class Api:
    """The hub's HTTP API, as the tests use it."""

    def __init__(self, hub: HubProcess) -> None:
        self.hub = hub
        self.http = httpx.AsyncClient(base_url=hub.http, timeout=10)

    async def close(self) -> None:
        await self.http.aclose()

    async def squad(self, unit: str = "water", name: str = "squad", **extra: Any) -> dict[str, Any]:
        response = await self.http.post(
            "/api/v1/squads", headers=auth("admin"), json={"unit": unit, "name": name, **extra}
        )
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    async def request(
        self, lat: float, lon: float, category: str = "water_main_burst", **extra: Any
    ) -> dict[str, Any]:
        response = await self.http.post(
            "/api/v1/requests",
            headers=auth("calltaker"),
            json={
                "caller_phone": "13800000000",
                "category": category,
                "description": "pipe burst on the street",
                "lat": lat,
                "lon": lon,
                **extra,
            },
        )
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    async def get_request(self, request_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/api/v1/requests/{request_id}", headers=auth("center"))
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def get_squad(self, squad_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/api/v1/squads/{squad_id}", headers=auth("center"))
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


async def online_squad(
    api: Api,
    hub: HubProcess,
    lat: float,
    lon: float,
    *,
    unit: str = "water",
    name: str = "squad",
    json: bool = False,
    **extra: Any,
) -> FieldClient:
    """Register a squad, connect it to ``hub``, put it on duty at (lat, lon), and wait until
    the hub sees it available there."""
    created = await api.squad(unit, name, **extra)
    client = FieldClient(hub.ws, created["id"], created["token"], json=json, reconnect=False)
    await client.start()
    await client.duty(True)
    await client.pos(lat, lon)

    last: dict[str, Any] = {}

    async def ready() -> bool:
        last.update(await api.get_squad(created["id"]))
        return bool(last["on_duty"] and last["online"] and last["position"])

    try:
        await eventually(ready)
    except AssertionError as exc:
        raise AssertionError(f"squad never became available: {last}") from exc
    return client


@contextlib.asynccontextmanager
async def counted_client(redis: Redis) -> AsyncIterator[tuple[Redis, RoundTrips]]:
    """A client of ``redis``'s server on one connection that counts what it sends (round
    trips); the connection is opened before the caller counts. Single Redis only."""
    pool = BlockingConnectionPool(
        max_connections=1,
        connection_class=redis.connection_pool.connection_class,
        **redis.connection_pool.connection_kwargs,
    )
    trips = count_round_trips(pool)
    client = Redis(connection_pool=pool)
    try:
        await client.ping()
        yield client, trips
    finally:
        await client.aclose()
