"""The Lua scripts in ``server/store/lua/``, registered once per Redis client.

Each script's header names its KEYS and ARGV. redis-py's ``Script`` runs EVALSHA and loads
the script again if the server lost it (after a restart), so callers just call.

A piece of Lua that several scripts carry out (the outbox append and acknowledgement, an
event recorded on the timeline and the stream, the citizen's message queue, the candidate
search, the claim) is written once in ``server/store/lua/lib/`` and pulled in by a
``--#include lib/<name>.lua`` line: Redis runs each script alone, so the text is joined here,
before it is registered (a piece that uses another is included after it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from server.store.cluster import is_cluster

_LUA = Path(__file__).parent / "lua"
_INCLUDE = "--#include "


def source(name: str) -> str:
    """The text of ``server/store/lua/<name>.lua`` with its ``--#include`` lines filled in."""
    lines = (_LUA / f"{name}.lua").read_text().splitlines(keepends=True)
    return "".join(
        (_LUA / line[len(_INCLUDE) :].strip()).read_text() if line.startswith(_INCLUDE) else line
        for line in lines
    )


class HubScript(AsyncScript):
    """redis-py's script object with a shorter call: EVALSHA straight to the client's
    ``execute_command`` (the hub's: :mod:`server.store.mux`), the script loaded again and
    called once more when Redis answers NOSCRIPT, as redis-py does. A call queued on a
    pipeline goes through redis-py's own code (it registers the script with the pipeline)."""

    async def __call__(
        self,
        keys: Sequence[Any] | None = None,
        args: Iterable[Any] | None = None,
        client: Any = None,
    ) -> Any:
        if client is not None and client is not self.registered_client:
            return await super().__call__(keys, args, client)
        client = self.registered_client
        keys = keys or ()
        words = (len(keys), *keys, *(args or ()))
        try:
            return await client.execute_command("EVALSHA", self.sha, *words)
        except NoScriptError:
            self.sha = await client.script_load(self.script)
            return await client.execute_command("EVALSHA", self.sha, *words)


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """A script call prepared to be sent in a pipeline with others (one round trip)."""

    script: AsyncScript
    keys: list[str]
    args: list[Any]

    def queue(self, pipe: Pipeline) -> None:
        """Add the call to ``pipe`` as an EVALSHA (the hub loads every script when it starts:
        :meth:`Scripts.load`); its answer goes through :meth:`settle`. Through
        ``execute_command``: redis-py's cluster pipeline refuses its ``evalsha`` method but
        routes the command itself by its keys (which share one slot)."""
        pipe.execute_command("EVALSHA", self.script.sha, len(self.keys), *self.keys, *self.args)

    async def settle(self, answer: Any) -> Any:
        """The call's answer, from a pipeline run with ``raise_on_error=False``: a NOSCRIPT
        one (Redis lost its scripts: restarted without its data) is the call made again by
        its script, which loads it; any other error is raised."""
        if isinstance(answer, NoScriptError):
            return await self.script(keys=self.keys, args=self.args)
        if isinstance(answer, Exception):
            raise answer
        return answer


@dataclass(frozen=True, slots=True)
class Scripts:
    candidates: AsyncScript
    claim: AsyncScript
    apply: AsyncScript
    due: AsyncScript
    connect: AsyncScript
    disconnect: AsyncScript
    duty: AsyncScript
    step_aside: AsyncScript
    ack: AsyncScript
    sequence: AsyncScript
    move: AsyncScript
    citizen_enqueue: AsyncScript
    citizen_take: AsyncScript
    citizen_done: AsyncScript
    notice: AsyncScript
    offer_nearest: AsyncScript
    outbox_count: AsyncScript  # a metric: server.store.gauges.outbox_frames
    track: AsyncScript  # called by server.store.tracks (its own registration, same script)
    positions: AsyncScript  # called by PositionWriter, which registers its own: loaded here

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        loaded = {name: HubScript(redis, source(name)) for name in cls.__dataclass_fields__}
        return cls(**loaded)  # type: ignore[arg-type]

    async def load(self, redis: Redis) -> None:
        """Load every script now (one pipeline), so the hot path never pays a NOSCRIPT
        answer and a second call for a script's first use."""
        if is_cluster(redis):  # SCRIPT LOAD goes to every master; not in a cluster pipeline
            for name in self.__dataclass_fields__:
                await redis.script_load(getattr(self, name).script)
            return
        pipe = redis.pipeline(transaction=False)
        for name in self.__dataclass_fields__:
            pipe.script_load(getattr(self, name).script)
        await pipe.execute()
