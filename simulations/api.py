"""The hub's HTTP API as the simulation uses it: one async client, one token per role."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import httpx

from simulations.arrivals import PlannedRequest


class ApiError(Exception):
    """The hub answered with an error status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status, self.body = status, body


def parse_tokens(text: str) -> dict[str, str]:
    """``"admin:tok,calltaker:tok,..."`` (DISPATCH_TOKENS) -> {role: token}."""
    pairs = (item.strip().partition(":") for item in text.split(",") if item.strip())
    return {role: token for role, _, token in pairs}


class HubApi:
    def __init__(self, base_url: str, tokens: Mapping[str, str], timeout_s: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = dict(tokens)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout_s, limits=httpx.Limits(max_connections=32)
        )

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http", "ws", 1) + "/ws/field"

    async def close(self) -> None:
        await self._http.aclose()

    def _auth(self, role: str) -> dict[str, str]:
        token = self.tokens.get(role) or self.tokens.get("admin")
        if not token:
            raise KeyError(f"no token for role {role!r} (nor admin)")
        return {"Authorization": f"Bearer {token}"}

    async def _call(
        self, method: str, path: str, role: str | None, body: Mapping[str, Any] | None = None
    ) -> Any:
        headers = self._auth(role) if role else {}
        response = await self._http.request(method, path, headers=headers, json=body)
        if response.status_code >= 400:
            raise ApiError(response.status_code, response.text)
        return response.json()

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/api/v1/health", None)
        return result

    async def wait_healthy(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if (await self.health()).get("status") == "ok":
                    return
            except (httpx.HTTPError, ApiError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the hub at {self.base_url} did not become healthy")
            await asyncio.sleep(0.1)

    async def account_usernames(self) -> set[str]:
        accounts: list[dict[str, Any]] = await self._call("GET", "/api/v1/accounts", "admin")
        return {a["username"] for a in accounts}

    async def create_account(self, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/api/v1/accounts", "admin", body)
        return result

    async def add_token(self, username: str, label: str) -> str:
        """A new API token of ``username`` (shown this once)."""
        result: dict[str, Any] = await self._call(
            "POST", f"/api/v1/accounts/{username}/tokens", "admin", {"label": label}
        )
        return str(result["token"])

    async def create_squad(self, unit: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", "/api/v1/squads", "admin", {"unit": unit, "name": name}
        )
        return result

    async def create_request(self, planned: PlannedRequest) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST",
            "/api/v1/requests",
            "calltaker",
            {
                "caller_phone": planned.caller_phone,
                "category": planned.category,
                "description": planned.description,
                "lat": planned.lat,
                "lon": planned.lon,
                "address": planned.address,
            },
        )
        return result

    async def get_request(self, request_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/api/v1/requests/{request_id}", "center")
        return result

    async def get_squad(self, squad_id: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._call("GET", f"/api/v1/squads/{squad_id}", "center")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def disputes(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/api/v1/center/disputes", "center")
        return result

    async def rule(self, request_id: str, ruling: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", f"/api/v1/requests/{request_id}/ruling", "center", ruling
        )
        return result

    async def cancel(self, request_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", f"/api/v1/requests/{request_id}/cancel", "center", body
        )
        return result

    async def live_map(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/api/v1/map", "wall")
        return result
