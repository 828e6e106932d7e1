"""Squads in Redis: registration, authentication, presence, duty, outbox and positions."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from server.store import keys, timers
from server.store.scripts import ScriptCall, Scripts
from server.store.text import text
from server.store.timers import TimerKind

SEQ_DIGITS = 12  # outbox members are a 12-digit seq followed by the frame body


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Presence:
    """What a connecting squad's hub needs to know."""

    seq: int  # last numbered frame written to its outbox
    acked: int  # last frame it acknowledged
    on_duty: bool
    trimmed: int = 0  # highest seq dropped from the outbox before it was acknowledged
    # Kept frames numbered above the hello's last_seq, read with the rest: (seq, body)
    frames: tuple[tuple[int, bytes], ...] = ()
    # Its active assignments: id, request, state, respond_by (as :meth:`SquadStore.active_jobs`)
    jobs: tuple[dict[str, str], ...] = ()
    # When its previous connection ended, if it was offline until this hello (None: it was
    # still online elsewhere, or the time is unknown): steps it took offline are dated after
    offline_since: float | None = None


@dataclass(frozen=True, slots=True)
class ReplacedToken:
    """A squad's new token, and where its connection was when the old one stopped."""

    token: str  # shown once, stored hashed
    hub: str  # the hub process that holds (or last held) its connection, "" if none
    online: bool


_ROSTER_FIELDS = (
    "name",
    "online",
    "duty",
    "capacity",
    "last_seen",
    "created",
    "token_replaced_at",
    "token_replaced_by",
)


def _skills(stored: str) -> list[str]:
    """The categories a squad is offered, as kept in its unit's skills hash (",a,b," or
    "*": every category of its unit, said ["*"])."""
    return ["*"] if stored == "*" else [s for s in stored.split(",") if s]


def _seconds(value: str) -> float | None:
    """A time kept as text in a squad's hash (empty: never)."""
    return float(value) if value else None


def hub_member(unit: str, squad_id: str, conn_id: str) -> str:
    """The member of a hub process's set (``keys.hub_squads``) for one connection."""
    return f"{unit}/{squad_id}/{conn_id}"


def parse_hub_member(member: str) -> tuple[str, str, str]:
    """(unit, squad id, connection id) of a hub set member; the connection id is empty in
    a member written before it was part of it (``unit/squad``)."""
    unit, _, rest = member.partition("/")
    squad_id, _, conn_id = rest.partition("/")
    return unit, squad_id, conn_id


def _raise_any(answers: list[Any]) -> None:
    for answer in answers:
        if isinstance(answer, Exception):
            raise answer


def _job(assignment_id: str, request: Any, state: Any, respond_by: Any) -> dict[str, str]:
    """An active assignment as the squad's session sees it (fields as Redis gave them)."""
    return {
        "id": assignment_id,
        "request": text(request),
        "state": text(state),
        "respond_by": text(respond_by),
    }


def _frames(members: list[bytes]) -> tuple[tuple[int, bytes], ...]:
    return tuple((int(member[:SEQ_DIGITS]), member[SEQ_DIGITS:]) for member in members)


class SquadStore:
    def __init__(self, redis: Redis, scripts: Scripts) -> None:
        self._redis = redis
        self._scripts = scripts
        # squad id -> unit, for squads that exist: a squad never changes unit, and is never
        # removed, so a hello after the first needs no lookup (a reconnect storm is 10,000)
        self._units: dict[str, str] = {}

    async def create(
        self, unit: str, name: str, capacity: int, skills: list[str]
    ) -> tuple[str, str]:
        """Register a squad; returns (id, token). The token is shown once and stored hashed."""
        # Random, not counted: a counter restarts when Redis loses its data, and the ledger
        # would then credit a new squad with an old one's steps. 40 bits, checked below.
        squad_id = f"S{secrets.token_hex(5)}"
        while await self._redis.hexists(keys.squad_units(), squad_id):
            squad_id = f"S{secrets.token_hex(5)}"
        token = secrets.token_urlsafe(24)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(
            keys.squad(unit, squad_id),
            mapping={
                "name": name,
                "unit": unit,
                "capacity": capacity,
                "duty": "0",
                "online": "0",
                "hub": "",
                "conn": "",
                "token_hash": token_hash(token),
                "seq": 0,
                "acked": 0,
                "created": time.time(),
            },
        )
        pipe.hset(keys.free(unit), squad_id, capacity)
        pipe.hset(keys.skills(unit), squad_id, "," + ",".join(skills) + "," if skills else "*")
        await pipe.execute()
        # Indexed last: the squad cannot log in before its records exist.
        await self._redis.hset(keys.squad_units(), squad_id, unit)
        return squad_id, token

    async def unit_of(self, squad_id: str) -> str | None:
        unit = self._units.get(squad_id)
        if unit is None:
            unit = text(await self._redis.hget(keys.squad_units(), squad_id)) or None
            if unit is not None:
                self._units[squad_id] = unit
        return unit

    async def replace_token(self, unit: str, squad_id: str, by: str) -> ReplacedToken:
        """A new token for the squad (a lost or stolen phone): the old one stops working at
        once. Returns the new one (shown once, stored hashed) with the hub process holding
        the squad and whether it is online, read in the same round trip; ``by`` is
        recorded."""
        token = secrets.token_urlsafe(24)
        key = keys.squad(unit, squad_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(
            key,
            mapping={
                "token_hash": token_hash(token),
                "token_replaced_at": time.time(),
                "token_replaced_by": by,
            },
        )
        pipe.hmget(key, ["hub", "online"])
        _, (hub, online) = await pipe.execute()
        return ReplacedToken(token, text(hub), text(online) == "1")

    async def names(self, pairs: Sequence[tuple[str, str]]) -> list[str]:
        """The names of the squads ``(unit, squad id)``, in one round trip ("" for a squad
        no longer registered)."""
        if not pairs:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for unit, squad_id in pairs:
            pipe.hget(keys.squad(unit, squad_id), "name")
        return [text(name) for name in await pipe.execute()]

    async def authenticate(self, squad_id: str, token: str) -> str | None:
        """The squad's unit if ``token`` is its token, else None (same time either way)."""
        unit = await self.unit_of(squad_id)
        stored = await self._redis.hget(keys.squad(unit or "-", squad_id), "token_hash")
        ok = hmac.compare_digest(text(stored) or "x" * 64, token_hash(token))
        return unit if ok and unit else None

    async def connect(
        self,
        unit: str,
        squad_id: str,
        token: str,
        last_seq: int,
        hub_id: str,
        conn_id: str,
    ) -> Presence | None:
        """The hello of a squad of ``unit``: None if ``token`` is not its token (nothing
        written). Else it is marked online on ``hub_id`` for ``conn_id``, and the answer
        holds its outbox's frames above ``last_seq`` and its active assignments too: one
        round trip (``connect.lua``, and the hub's set in the same pipeline)."""
        call = ScriptCall(
            self._scripts.connect,
            [
                keys.squad(unit, squad_id),
                keys.available(unit),
                keys.jobs(unit, squad_id),
                keys.outbox(unit, squad_id),
            ],
            [squad_id, hub_id, conn_id, token_hash(token), last_seq, keys.assignment(unit, "")],
        )
        member = hub_member(unit, squad_id, conn_id)
        pipe = self._redis.pipeline(transaction=False)
        # Listed before the squad is marked online here: if this process dies between the
        # two, the reaper still finds it (a member whose squad is not online here is dropped).
        pipe.sadd(keys.hub_squads(hub_id), member)
        call.queue(pipe)
        added, answer = await pipe.execute(raise_on_error=False)
        _raise_any([added])
        reply = await call.settle(answer)
        if int(reply[0]) != 1:
            await self._redis.srem(keys.hub_squads(hub_id), member)
            return None
        _, seq, acked, duty, trimmed, frames, flat, offline_since = reply
        jobs = sorted(
            (_job(text(flat[i]), *flat[i + 1 : i + 4]) for i in range(0, len(flat), 4)),
            key=lambda job: job["id"],
        )
        return Presence(
            seq=int(seq),
            acked=int(acked),
            on_duty=text(duty) == "1",
            trimmed=int(trimmed),
            frames=_frames(frames),
            jobs=tuple(jobs),
            offline_since=float(text(offline_since)) if text(offline_since) else None,
        )

    async def disconnect(
        self,
        unit: str,
        squad_id: str,
        owner: str,
        timers_at: tuple[float, float],
        *,
        by_hub: bool = False,
        member: tuple[str, str] | None = None,
    ) -> bool:
        """Mark the squad offline if ``owner`` (its connection id, or with ``by_hub`` its hub
        process id) still owns it, and start its offline and alert timers, due at
        ``timers_at`` (epoch s). ``member``: (hub id, member) to drop from that hub's set
        (``hub_member``) in the same round trip, whether or not the squad went offline.
        Returns True if it went offline now."""
        offline_at, alert_at = timers_at
        call = ScriptCall(
            self._scripts.disconnect,
            [
                keys.squad(unit, squad_id),
                keys.available(unit),
                keys.geo(unit),
                keys.timers(unit),
            ],
            [
                squad_id,
                owner,
                time.time(),
                "hub" if by_hub else "conn",
                timers.entry(TimerKind.OFFLINE, squad_id),
                round(offline_at * 1000, 3),
                timers.entry(TimerKind.ALERT, squad_id),
                round(alert_at * 1000, 3),
            ],
        )
        pipe = self._redis.pipeline(transaction=False)
        call.queue(pipe)
        if member is not None:
            pipe.srem(keys.hub_squads(member[0]), member[1])
        answers = await pipe.execute(raise_on_error=False)
        _raise_any(answers[1:])
        return int(await call.settle(answers[0])) == 1

    async def step_aside(self, hub_id: str, members: list[tuple[str, str]]) -> int:
        """Take the squads of ``members`` (unit, squad id) connected to ``hub_id`` out of
        dispatch candidacy, atomically per unit (one ``step_aside.lua`` call per unit, all in
        one round trip), before their draining hub closes them; they stay online and on duty,
        and their hello on another hub makes them candidates again. Returns how many stepped
        aside."""
        by_unit: dict[str, list[str]] = {}
        for unit, squad_id in members:
            by_unit.setdefault(unit, []).append(squad_id)
        calls = [
            ScriptCall(
                self._scripts.step_aside,
                [keys.available(unit), *(keys.squad(unit, s) for s in squads)],
                [hub_id, *squads],
            )
            for unit, squads in by_unit.items()
        ]
        if not calls:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for call in calls:
            call.queue(pipe)
        answers = await pipe.execute(raise_on_error=False)
        return sum([int(await c.settle(a)) for c, a in zip(calls, answers, strict=True)])

    async def is_online(self, unit: str, squad_id: str) -> bool:
        return text(await self._redis.hget(keys.squad(unit, squad_id), "online")) == "1"

    async def set_duty(self, unit: str, squad_id: str, on: bool, conn_id: str) -> int:
        """1: available now, 0: not available, -1: this connection no longer owns the squad."""
        result = await self._scripts.duty(
            keys=[keys.squad(unit, squad_id), keys.available(unit)],
            args=[squad_id, "1" if on else "0", conn_id],
        )
        return int(result)

    async def ack(self, unit: str, squad_id: str, seq: int) -> int:
        result = await self._scripts.ack(
            keys=[keys.squad(unit, squad_id), keys.outbox(unit, squad_id)], args=[seq]
        )
        return int(result)

    async def frames_after(self, unit: str, squad_id: str, seq: int) -> list[tuple[int, bytes]]:
        """Kept numbered frames with a number above ``seq``, in order: (seq, body)."""
        raw = await self._redis.zrangebyscore(keys.outbox(unit, squad_id), f"({seq}", "+inf")
        return list(_frames(cast(list[bytes], raw)))  # not decoded: frames are binary

    async def positions(
        self, unit: str, center: tuple[float, float], radius_km: float
    ) -> list[dict[str, object]]:
        """Every online squad of the unit with a position: id, lat, lon, available, busy."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.geosearch(
            keys.geo(unit),
            longitude=center[1],
            latitude=center[0],
            radius=radius_km,
            unit="km",
            withcoord=True,
        )
        pipe.smembers(keys.available(unit))
        pipe.hgetall(keys.free(unit))
        found, available, free = await pipe.execute()
        ready = {text(s) for s in available}
        free_by_id = {text(k): int(v) for k, v in free.items()}
        return [
            {
                "id": sid,
                "unit": unit,
                "lat": round(lat, 6),
                "lon": round(lon, 6),
                "on_duty": sid in ready,
                "busy": free_by_id.get(sid, 0) <= 0,
            }
            for sid, (lon, lat) in ((text(item[0]), item[1]) for item in found)
        ]

    async def active_jobs(self, unit: str, squad_id: str) -> list[dict[str, str]]:
        """The squad's active assignments: id, request, state."""
        jobs = await self._redis.smembers(keys.jobs(unit, squad_id))
        return await self._jobs(unit, [text(j) for j in jobs])

    async def _jobs(self, unit: str, assignment_ids: list[str]) -> list[dict[str, str]]:
        if not assignment_ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for assignment_id in sorted(assignment_ids):
            pipe.hmget(keys.assignment(unit, assignment_id), ["request", "state", "respond_by"])
        rows = await pipe.execute()
        return [_job(aid, *row) for aid, row in zip(sorted(assignment_ids), rows, strict=True)]

    async def roster(self, unit: str) -> list[dict[str, Any]]:
        """Every squad registered to the unit, by name: online, on duty, capacity and what
        of it is free, active assignments, skills, when it was last seen (offline), and who
        last replaced its token and when. Two round trips whatever the unit's size."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(keys.free(unit))
        pipe.hgetall(keys.skills(unit))
        free, skills = await pipe.execute()
        squad_ids = [text(k) for k in skills]
        pipe = self._redis.pipeline(transaction=False)
        for squad_id in squad_ids:
            pipe.hmget(keys.squad(unit, squad_id), _ROSTER_FIELDS)
            pipe.scard(keys.jobs(unit, squad_id))
        answers = await pipe.execute()
        free_by_id = {text(k): int(v) for k, v in free.items()}
        skills_by_id = {text(k): text(v) for k, v in skills.items()}
        rows = []
        for i, squad_id in enumerate(squad_ids):
            fields = dict(zip(_ROSTER_FIELDS, map(text, answers[2 * i]), strict=True))
            if not fields["name"] and not fields["capacity"]:
                continue  # no record (a squad is never removed: nothing to show)
            online = fields["online"] == "1"
            rows.append(
                {
                    "id": squad_id,
                    "unit": unit,
                    "name": fields["name"],
                    "online": online,
                    "on_duty": fields["duty"] == "1",
                    "capacity": int(fields["capacity"] or 1),
                    "free_capacity": free_by_id.get(squad_id, 0),
                    "active": int(answers[2 * i + 1]),
                    "skills": _skills(skills_by_id[squad_id]),
                    "last_seen": None if online else _seconds(fields["last_seen"]),
                    "registered_at": _seconds(fields["created"]),
                    "token_replaced_at": _seconds(fields["token_replaced_at"]),
                    "token_replaced_by": fields["token_replaced_by"] or None,
                }
            )
        rows.sort(key=lambda row: (row["name"], row["id"]))
        return rows

    async def describe(self, unit: str, squad_id: str) -> dict[str, Any] | None:
        """The squad as the center sees it: state, position, active assignments."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(keys.squad(unit, squad_id))
        pipe.geopos(keys.geo(unit), squad_id)
        pipe.zscore(keys.fix_times(unit), squad_id)
        pipe.smembers(keys.jobs(unit, squad_id))
        pipe.hget(keys.free(unit), squad_id)
        pipe.hget(keys.skills(unit), squad_id)
        raw, (where,), fix_time, jobs, free, skills = await pipe.execute()
        if not raw:
            return None
        record = {text(k): text(v) for k, v in raw.items()}
        assignments = await self._jobs(unit, [text(j) for j in jobs])
        return {
            "id": squad_id,
            "unit": unit,
            "name": record.get("name", ""),
            "online": record.get("online") == "1",
            "on_duty": record.get("duty") == "1",
            "capacity": int(record.get("capacity", "1")),
            "free_capacity": int(text(free) or 0),
            "skills": _skills(text(skills)),
            "position": (
                {"lat": float(where[1]), "lon": float(where[0]), "fixed_at": float(fix_time)}
                if where is not None and fix_time is not None
                else None
            ),
            "assignments": assignments,
            "last_seq": int(record.get("seq", "0")),
            "acked_seq": int(record.get("acked", "0")),
        }
