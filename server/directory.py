"""The city's units as configured, plus units added through the API (kept in Redis)."""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis

from server.city import City, Unit
from server.store import keys


class Directory:
    """The city's units as configured, plus units added through the API.

    An added unit takes over routing for the (category, district) pairs it declares.
    """

    def __init__(self, redis: Redis, city: City) -> None:
        self._redis = redis
        self._base = city
        self.city = city

    async def add(self, unit: Unit) -> None:
        await self._redis.hset(keys.units(), unit.code, msgspec.json.encode(unit))
        self._rebuild([*self._added(), unit])

    async def refresh(self) -> None:
        raw = await self._redis.hgetall(keys.units())
        added = [msgspec.json.decode(v, type=Unit) for v in raw.values()]
        self._rebuild(added)

    def _added(self) -> list[Unit]:
        base = {u.code for u in self._base.units}
        return [u for u in self.city.units if u.code not in base]

    def _rebuild(self, added: list[Unit]) -> None:
        by_code = {u.code: u for u in added}
        units = (*self._base.units, *by_code.values())
        self.city = City(msgspec.structs.replace(self._base.file, units=units))

    def unit_codes(self) -> list[str]:
        return [u.code for u in self.city.units]
