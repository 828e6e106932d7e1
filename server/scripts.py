"""The Lua scripts in ``server/lua/``, registered once per Redis client.

Each script's header names its KEYS and ARGV. redis-py's ``Script`` runs EVALSHA and loads
the script again if the server lost it (after a restart), so callers just call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

_LUA = Path(__file__).parent / "lua"


@dataclass(frozen=True, slots=True)
class Scripts:
    candidates: AsyncScript
    claim: AsyncScript
    apply: AsyncScript
    due: AsyncScript
    connect: AsyncScript
    disconnect: AsyncScript
    duty: AsyncScript
    ack: AsyncScript
    sequence: AsyncScript
    move: AsyncScript
    citizen_enqueue: AsyncScript
    citizen_take: AsyncScript
    citizen_done: AsyncScript
    notice: AsyncScript

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        loaded = {
            name: redis.register_script((_LUA / f"{name}.lua").read_text())
            for name in cls.__dataclass_fields__
        }
        return cls(**loaded)  # type: ignore[arg-type]
