"""Citizen requests in Redis: creation, reads, and committing lifecycle steps.

A request lives in its unit's hash (``keys.request``) with a version ``v`` bumped by every
change. :meth:`RequestStore.commit` carries out one :class:`server.lifecycle.Step` with
``apply.lua``: compare-and-set on the version, fields, timeline and event stream, and the
step's effects on squads and queue, in one atomic script.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import msgspec
from redis.asyncio import Redis

from dispatch_field import protocol
from server import deadlines, ids
from server.lifecycle import RequestView, State, Step
from server.store import keys, timers
from server.store.cluster import is_cluster, queue_wait
from server.store.scripts import ScriptCall, Scripts
from server.store.text import text
from server.store.timers import TimerKind

log = logging.getLogger(__name__)
T = TypeVar("T")

IDEMPOTENCY_TTL_S = 86_400  # how long an intake Idempotency-Key is remembered
SEQUENCE_TTL_S = 3 * 86_400  # a day's counter outlives the day (clocks of processes differ)
LEDGER_WAIT_S = 3.0  # how long a new day's first number waits for the ledger's answer

# The highest request number of a day (``YYYYMMDD``) the ledger recorded, 0 if none.
HighestRecorded = Callable[[str], Awaitable[int]]


class StaleRequest(Exception):
    """The request changed since it was read; read again and recompute the step."""

    def __init__(self, request_id: str, then: Any = None) -> None:
        super().__init__(request_id)
        self.then = then  # RequestStore.create: the answer of its ``then`` call (sent anyway)


class KeptChanging(Exception):
    """Every attempt of :func:`compare_and_set` met a request changed since it read it."""


async def compare_and_set(attempt: Callable[[], Awaitable[T]], attempts: int) -> T:
    """The one compare-and-set loop: ``attempt`` reads the request, decides its step and
    commits it with the version it read; while it raises :class:`StaleRequest` (another step
    was committed in between) it runs again, at most ``attempts`` times in all, then
    :class:`KeptChanging` is raised (each caller says what that means to its client)."""
    for _ in range(attempts):
        try:
            return await attempt()
        except StaleRequest:
            continue
    raise KeptChanging


UNKNOWN_COMMAND = "ok"  # what a command id kept before ids kept what they stood for


class DuplicateCommand(Exception):
    """The command id was applied before. ``first``: what it stood for then (the
    ``command_what`` of that commit; UNKNOWN_COMMAND if recorded before ids kept it): a
    retry of the same command is a no-op, another command reusing the id is refused by the
    caller."""

    def __init__(self, command_id: str | None, first: str = UNKNOWN_COMMAND) -> None:
        super().__init__(command_id)
        self.first = first


class ForeignAssignment(Exception):
    """The assignment is not the commanding squad's (checked by the commit, atomically)."""


class IdempotencyKeyReused(Exception):
    """The idempotency key was used before for a different request (another body)."""

    def __init__(self, request_id: str) -> None:
        super().__init__(request_id)
        self.request_id = request_id  # the request the key made first


class RequestRecord(msgspec.Struct, kw_only=True):
    """A request as stored in its unit's hash, typed: built once, where it is read.

    Redis keeps every value as text; an empty text is an unset field (None or "")."""

    id: str
    state: State = State.RECEIVED
    v: int = 0  # version: bumped by every committed step
    category: str = ""
    description: str = ""
    address: str = ""
    caller_phone: str = ""
    lat: float = 0.0
    lon: float = 0.0
    district: str = ""
    unit: str = ""
    route: str = ""
    received_at: float = 0.0
    accept_by: float | None = None
    arrive_by: float | None = None
    resolve_by: float | None = None
    promised_by: float | None = None
    defer_reason: str = ""
    dispute_reason: str = ""
    disputed_by: str = ""  # the squad that said "not our jurisdiction" (offered first on uphold)
    assist: str = ""  # assisting units, comma-separated (server.center)
    assist_of: str = ""  # an assist item: the request it assists (server.center)
    cancel_reason: str = ""
    duplicate_of: str = ""
    squad: str = ""
    assignment: str = ""
    offered_at: float | None = None  # epoch ms (set by claim.lua)
    accepted_at: float | None = None  # first acceptance (epoch s; server.deadlines stamps)
    arrived_at: float | None = None  # first arrival on scene
    result: str = ""
    lang: str = "zh"  # the caller's language for messages

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> RequestRecord:
        """From the hash as Redis returns it (bytes) or as the caller wrote it (text)."""
        values = {}
        for k, v in raw.items():  # inline text(): this runs for every record read or known
            value = v.decode() if type(v) is bytes else text(v)
            if value:  # "": unset
                values[k.decode() if type(k) is bytes else text(k)] = value
        return msgspec.convert(values, cls, strict=False)

    def with_fields(self, changes: Mapping[str, str]) -> RequestRecord:
        """This record with ``changes`` applied: text fields as a script writes them (``""``
        unsets one; names that are not fields are ignored), typed as :meth:`from_hash` types
        them. What reading the hash back would give, without turning the whole record into
        text and back (a step's few fields are all that is converted)."""
        updates = {}
        for name, value in changes.items():
            field = _FROM_TEXT.get(name)
            if field is not None:
                convert, default = field
                updates[name] = convert(value) if value else default
        return msgspec.structs.replace(self, **updates)

    def as_fields(self) -> dict[str, str]:
        """The record as the text fields it was stored as (for code that reads fields by
        name, such as the citizen's message templates)."""
        return {
            name: value if isinstance(value, str) else repr(value)
            for name, value in msgspec.structs.asdict(self).items()
            if value is not None
        }

    def field_view(self) -> Mapping[str, str]:
        """:meth:`as_fields`, each field put in text only when it is read (a step's message
        reads three or four of the record's thirty)."""
        return _FieldView(self)

    @property
    def offered_s(self) -> float | None:
        """``offered_at`` in epoch seconds, as every other time (it is kept in ms)."""
        return None if self.offered_at is None else round(self.offered_at / 1000, 3)

    @property
    def last_step_at(self) -> float:
        """When the request's last stamped step happened (its offer, first acceptance, first
        arrival; 0 if none): no later step may be dated before it."""
        return max(self.offered_s or 0.0, self.accepted_at or 0.0, self.arrived_at or 0.0)

    def view(self) -> RequestView:
        """What the state machine needs to know of this request."""
        return RequestView(state=self.state, squad=self.squad, assignment=self.assignment)

    def progress(self) -> deadlines.Progress:
        """What the deadline rules need to know of this request."""
        return deadlines.Progress(
            state=self.state,
            accept_by=self.accept_by,
            arrive_by=self.arrive_by,
            resolve_by=self.resolve_by,
            promised_by=self.promised_by,
            accepted_at=self.accepted_at,
            arrived_at=self.arrived_at,
        )


_FIELDS = frozenset(RequestRecord.__struct_fields__)


def _from_text(kind: Any) -> Callable[[str], Any]:
    """How a field of type ``kind`` is read from its text (as ``from_hash`` reads it)."""
    if kind in (str, int, float, State):
        return kind  # type: ignore[no-any-return]
    if kind == float | None:
        return float
    raise TypeError(f"RequestRecord: no text conversion for a field of type {kind!r}")


# name -> (text to value, the value of an unset field): RequestRecord.with_fields
_FROM_TEXT: dict[str, tuple[Callable[[str], Any], Any]] = {
    info.name: (_from_text(info.type), None if info.default is msgspec.NODEFAULT else info.default)
    for info in msgspec.structs.fields(RequestRecord)
}


class _FieldView(Mapping[str, str]):
    """A record's fields as text, as :meth:`RequestRecord.as_fields` gives them (an unset
    field is absent), converted when read."""

    __slots__ = ("_record",)

    def __init__(self, record: RequestRecord) -> None:
        self._record = record

    def __getitem__(self, name: str) -> str:
        value = getattr(self._record, name, None) if name in _FIELDS else None
        if value is None:
            raise KeyError(name)
        return value if isinstance(value, str) else repr(value)

    def __iter__(self) -> Iterator[str]:
        record = self._record
        return (name for name in record.__struct_fields__ if getattr(record, name) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def request_info(record: RequestRecord) -> protocol.RequestInfo:
    """What a squad's phone is told of a request (in an offer, or a resync)."""
    return protocol.RequestInfo(
        id=record.id,
        category=record.category,
        description=record.description,
        lat=record.lat,
        lon=record.lon,
        address=record.address,
        assist_of=record.assist_of,
        caller_phone=record.caller_phone,
        accept_by=record.accept_by,
        arrive_by=record.arrive_by,
        resolve_by=record.resolve_by,
    )


@dataclass(frozen=True, slots=True)
class Commit:
    """Outcome of a committed step."""

    version: int
    revoke_seq: int  # seq of the revoke frame put in the squad's outbox, 0 if none
    revoke_body: bytes  # that frame's body (seq omitted), b"" if none
    hub: str  # hub process holding the squad's socket ('' if offline or no squad)
    queued: int = -1  # the unit's waiting requests when the step freed a squad, else -1


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A caller's message ready to be queued by the script that commits its step (built by
    :meth:`server.citizen.outbox.CitizenOutbox.prepare`)."""

    key: str  # idempotency key: queued once whoever queues it again
    queued_ms: int
    body: str  # the message as JSON
    event: str  # its citizen_message_queued event


# Compact JSON, text as UTF-8 (as json.dumps with ensure_ascii=False and no spaces writes it),
# a tenth of json.dumps' time: a request's lifecycle writes some fifteen events.
_encode = msgspec.json.Encoder().encode


def _messages_arg(messages: Sequence[QueuedMessage]) -> str:
    if not messages:
        return "[]"
    return _encode([[m.key, str(m.queued_ms), m.body, m.event] for m in messages]).decode()


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a step: recorded in the timeline."""

    kind: str  # "calltaker", "squad", "system", "center", "unit", ...: a role or a part
    id: str = ""  # the person's username, the squad, or the part of the system
    unit: str = ""  # a unit desk's unit: what it may see (not part of the label)

    def label(self) -> str:
        return f"{self.kind}:{self.id}" if self.id else self.kind


def event_json(kind: str, request_id: str, at: float, actor: Actor, **extra: Any) -> str:
    """One timeline/stream event. Never contains a newline (apply.lua splits on them)."""
    payload = {"type": kind, "request": request_id, "at": round(at, 3), "by": actor.label()}
    payload.update({k: v for k, v in extra.items() if v not in (None, "")})
    return _encode(payload).decode()


class RequestStore:
    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        *,
        events_maxlen: int,
        command_memory_s: int,
        outbox_max_frames: int,
        zone: ZoneInfo,
        highest_recorded: HighestRecorded | None = None,
        id_block: int = 1,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
    ) -> None:
        """``zone``: the city's time zone (request numbers carry its date).
        ``wait_replicas``: a new request is answered only once that many replicas have it
        (``WAIT``, at most ``wait_timeout_ms``; see server.store.cluster), 0: not waited for.
        ``highest_recorded``: asks the ledger where a day's numbers got to, when Redis has
        no counter for the day; None (no ledger) counts as 0. ``id_block``: how many request
        numbers this process takes from the day's counter at a time and hands out itself
        (an intake then usually pays no round trip for its number); far below
        ``server.ids.RECOVERY_MARGIN``, so a recovered counter never meets a block still
        held by a process."""
        assert 0 < id_block < ids.RECOVERY_MARGIN // 4, id_block
        self._id_block = id_block
        self._block: tuple[str, int, int] = ("", 0, 0)  # (day, next number, last number)
        self._block_lock = asyncio.Lock()
        self._redis = redis
        self._scripts = scripts
        self._events_maxlen = events_maxlen
        self._command_memory_s = command_memory_s
        self._outbox_max_frames = outbox_max_frames
        self._zone = zone
        self._wait = (wait_replicas, wait_timeout_ms)
        self._cluster = is_cluster(redis)
        self.replicas_short = 0  # new requests answered before wait_replicas had them
        self._highest_recorded = highest_recorded

    async def reserve_id(self, scope: str, key: str | None, fingerprint: str) -> tuple[str, bool]:
        """The id for a new request: a fresh one, or with an idempotency ``key`` the id that
        key reserved before. Returns (id, whether that request is stored already).

        ``scope`` is the caller (a key is theirs alone) and ``fingerprint`` the request's
        content: the key is bound to it, and the same key with another fingerprint raises
        IdempotencyKeyReused (a different request must never be answered with the first).
        The reservation is written before the request, so a retry after a crash in between
        creates the request under the same id instead of a twin.
        """
        if key is None:
            return await self.next_id(), False
        reservation = keys.idempotency(scope, key)
        reserved = await self._redis.get(reservation)
        if reserved is None:
            fresh = await self.next_id()
            if await self._redis.set(
                reservation, _reservation(fingerprint, fresh), nx=True, ex=IDEMPOTENCY_TTL_S
            ):
                return fresh, False
            reserved = await self._redis.get(reservation)  # a concurrent retry won
        reserved_for, request_id = _reserved(text(reserved))
        if reserved_for != fingerprint:
            raise IdempotencyKeyReused(request_id)
        unit = await self.unit_of(request_id)
        return request_id, unit is not None and await self.read(unit, request_id) is not None

    async def next_id(self, at: float | None = None) -> str:
        """A request number never given out before, dated by the city's day at ``at``
        (default now). See :mod:`server.ids` for how it survives Redis losing its data."""
        day = ids.local_day(time.time() if at is None else at, self._zone)
        async with self._block_lock:
            block_day, number, last = self._block
            if block_day != day or number > last:
                last = await self._take_block(day)
                number = last - self._id_block + 1
            self._block = (day, number + 1, last)
        return ids.request_id(day, number)

    async def _take_block(self, day: str) -> int:
        """The last number of a fresh block of ``day``'s numbers."""
        counter = [keys.request_sequence(day), keys.sequence_marker()]
        size = self._id_block
        number = await self._scripts.sequence(keys=counter, args=["", "", SEQUENCE_TTL_S, size])
        if number is None:  # no counter for the day yet: recover where it got to
            counted_before, started_empty = ids.sequence_starts(await self._recorded(day))
            number = await self._scripts.sequence(
                keys=counter, args=[counted_before, started_empty, SEQUENCE_TTL_S, size]
            )
        return int(number)

    async def _recorded(self, day: str) -> int:
        """The ledger's highest number of ``day``; 0 when there is no ledger, or it does not
        answer in time: intake must not stop for the ledger. On a new day that is exactly
        right; on a Redis that also started empty it risks a number given out before, which
        the ledger then refuses loudly (server.ledger.fold.attribute)."""
        if self._highest_recorded is None:
            return 0
        try:
            return await asyncio.wait_for(self._highest_recorded(day), LEDGER_WAIT_S)
        except Exception as exc:  # noqa: BLE001 - any failure of the ledger: go on without it
            log.warning(
                "request numbers of %s: the ledger did not answer (%s: %s); "
                "counting from what Redis knows",
                day,
                type(exc).__name__,
                exc,
            )
            return 0

    async def create(
        self,
        request_id: str,
        unit: str,
        fields: dict[str, str],
        events: list[str],
        step: Step,
        *,
        received_at: float,
        messages: Sequence[QueuedMessage] = (),
        then: ScriptCall | None = None,
    ) -> Any:
        """Store a new request with its first events, and carry out its triage ``step``;
        ``messages`` (the caller's intake messages) are queued in the same script. ``then``:
        a script call sent right after the create, in the same round trip (the first offer:
        ``Dispatcher.first_offer``); returns its answer (None without one). It is sent
        whatever the create's outcome (its script re-checks the request's state); when the
        create fails, StaleRequest carries its answer.

        The id -> unit index is written first, in the same pipeline (one round trip): a
        crash between the two leaves an index entry that leads to nothing (a 404), never a
        request that cannot be found. On a Redis Cluster the index lives in another slot
        (another node, perhaps) and a pipeline's nodes are written in parallel: there it is
        written first on its own (one more round trip), for the same guarantee.
        """
        pipe = self._redis.pipeline(transaction=False)
        if self._cluster:
            await self._redis.hset(keys.request_units(), request_id, unit)
        else:
            pipe.hset(keys.request_units(), request_id, unit)
        apply_keys = self._apply_keys(unit, request_id, "", "", None)
        apply_args = self._apply_args(
            expected=0,
            events=events,
            flags=_flags(step, None, ""),
            revoke=b"",
            request_id=request_id,
            assignment="",
            squad="",
            queue_score=received_at,
            fields=fields,
            assignment_state="",
            step=step,
            at=received_at,
            messages=messages,
        )
        calls = [ScriptCall(self._scripts.apply, apply_keys, apply_args)]
        if then is not None:
            calls.append(then)
        for call in calls:
            call.queue(pipe)
        replicas, timeout_ms = self._wait
        if replicas:  # behind the writes, on their connection: they reached the replicas
            queue_wait(pipe, self._redis, apply_keys[0], replicas, timeout_ms)
        answers = await pipe.execute(raise_on_error=False)
        if self._cluster:
            answers.insert(0, 0)  # the index's place (written above)
        if replicas:
            reached = answers.pop()
            if isinstance(reached, Exception) or int(reached) < replicas:
                self.replicas_short += 1
                log.warning("request %s: %s of %d replicas have it", request_id, reached, replicas)
        results = [
            await call.settle(answer) for call, answer in zip(calls, answers[1:], strict=True)
        ]
        if isinstance(answers[0], Exception):
            raise answers[0]
        then_answer = results[1] if then is not None else None
        if text(results[0][0]) != "ok":  # the id was taken: a counter reset, a twin retry
            raise StaleRequest(request_id, then_answer)
        return then_answer

    async def note(self, unit: str, request_id: str, event: str) -> None:
        """Record an event that changes nothing in the request (e.g. its squad went offline)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.rpush(keys.timeline(unit, request_id), event)
        pipe.xadd(keys.events(unit), {"e": event}, maxlen=self._events_maxlen, approximate=True)
        await pipe.execute()

    async def unit_of(self, request_id: str) -> str | None:
        unit = await self._redis.hget(keys.request_units(), request_id)
        return text(unit) if unit is not None else None

    async def read(self, unit: str, request_id: str) -> RequestRecord | None:
        raw = await self._redis.hgetall(keys.request(unit, request_id))
        return RequestRecord.from_hash(raw) if raw else None

    async def open_records(self, unit: str, limit: int) -> list[RequestRecord]:
        """The unit's unresolved requests, oldest first, at most ``limit``."""
        ids = await self._redis.zrange(keys.open_requests(unit), 0, limit - 1)
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for raw in ids:
            pipe.hgetall(keys.request(unit, text(raw)))
        return [RequestRecord.from_hash(h) for h in await pipe.execute() if h]

    async def open_requests(self, unit: str, limit: int = 2000) -> list[dict[str, str]]:
        """The unit's unresolved requests (oldest first) with what a map shows of them."""
        ids = await self._redis.zrange(keys.open_requests(unit), 0, limit - 1)
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        shown = (
            "id",
            "category",
            "state",
            "lat",
            "lon",
            "squad",
            "received_at",
            "district",
            "accept_by",
            "arrive_by",
            "resolve_by",
            "promised_by",
            "accepted_at",
            "arrived_at",
        )
        for request_id in ids:
            pipe.hmget(keys.request(unit, text(request_id)), shown)
        rows = await pipe.execute()
        return [
            {name: text(value) for name, value in zip(shown, row, strict=True) if value}
            for row in rows
            if row[0] is not None
        ]

    async def timeline(self, unit: str, request_id: str) -> list[dict[str, Any]]:
        raw = await self._redis.lrange(keys.timeline(unit, request_id), 0, -1)
        return [json.loads(item) for item in raw]

    async def commit(
        self,
        unit: str,
        request_id: str,
        expected_version: int,
        step: Step,
        events: list[str],
        *,
        assignment: str = "",
        squad: str = "",
        command_id: str | None = None,
        command_what: str = "",
        queue_score: float = 0.0,
        at: float | None = None,
        owner_check: bool = False,
        ack: int = 0,
        messages: Sequence[QueuedMessage] = (),
    ) -> Commit:
        """Carry out ``step`` if the request is still at ``expected_version``.

        ``owner_check``: the assignment must be ``squad``'s (else ForeignAssignment, nothing
        written). ``ack``: the squad's cumulative acknowledgement, recorded first whatever
        the outcome (0: none). ``messages``: the caller's messages of the step, queued with it.

        ``at``: when the step happened (default now): the first acceptance and arrival are
        stamped with it, and the supervision notices the step meets close at it. The
        deadline timers the step sets in motion (server.deadlines.timer_changes) are
        scheduled and dropped in the same script: no caller has to remember them.

        ``command_what``: what ``command_id`` stands for (kept with it, handed back by
        DuplicateCommand when the id comes again).

        Raises StaleRequest if it moved on, DuplicateCommand if ``command_id`` was seen.
        """
        effects = step.effects
        flags = _flags(step, command_id, assignment) + ("S" if owner_check else "")
        revoke = (
            protocol.encode(protocol.Revoke(assignment=assignment, reason=effects.revoke_reason))
            if effects.revoke_reason
            else b""
        )
        fields = dict(step.fields, state=step.state.value)
        assignment_state = "revoked" if effects.revoke_reason else step.state.value
        result = await self._scripts.apply(
            keys=self._apply_keys(unit, request_id, assignment, squad, command_id),
            args=self._apply_args(
                expected=expected_version,
                events=events,
                flags=flags,
                revoke=revoke,
                request_id=request_id,
                assignment=assignment,
                squad=squad,
                queue_score=queue_score,
                fields=fields,
                assignment_state=assignment_state,
                step=step,
                at=time.time() if at is None else at,
                ack=ack,
                messages=messages,
                command_what=command_what,
            ),
        )
        outcome = text(result[0])
        if outcome == "foreign":
            raise ForeignAssignment(assignment)
        if outcome == "dup":
            raise DuplicateCommand(command_id, text(result[1]))
        if outcome == "stale":
            raise StaleRequest(request_id)
        return Commit(
            version=int(result[1]),
            revoke_seq=int(result[2]),
            revoke_body=revoke,
            hub=text(result[3]),
            queued=int(result[4]),
        )

    def _apply_keys(
        self, unit: str, request_id: str, assignment: str, squad: str, command_id: str | None
    ) -> list[str]:
        squad = squad or "-"
        return [
            keys.request(unit, request_id),
            keys.timeline(unit, request_id),
            keys.events(unit),
            keys.queue(unit),
            keys.timers(unit),
            keys.free(unit),
            keys.stats(unit),
            keys.assignment(unit, assignment or "-"),
            keys.squad(unit, squad),
            keys.outbox(unit, squad),
            keys.jobs(unit, squad),
            keys.command(unit, squad, command_id or "-"),
            keys.open_requests(unit),
            keys.notices(unit, request_id),
            keys.request_open_notices(unit, request_id),
            keys.open_notices(unit),
            keys.closed_notices(unit),
            keys.citizen_messages(unit, request_id),
            keys.citizen_due(unit),
        ]

    def _apply_args(
        self,
        *,
        expected: int,
        events: list[str],
        flags: str,
        revoke: bytes,
        request_id: str,
        assignment: str,
        squad: str,
        queue_score: float,
        fields: dict[str, str],
        assignment_state: str,
        step: Step,
        at: float,
        ack: int = 0,
        messages: Sequence[QueuedMessage] = (),
        command_what: str = "",
    ) -> list[Any]:
        pairs = [item for kv in fields.items() for item in kv]
        changes = deadlines.timer_changes(request_id, step.state, fields)
        return [
            expected,
            "\n".join(events),
            self._events_maxlen,
            flags,
            revoke,
            request_id,
            assignment,
            squad,
            self._command_memory_s,
            queue_score,
            len(fields),
            assignment_state,
            self._outbox_max_frames,
            timers.entry(TimerKind.OFFER, assignment or "-"),
            repr(round(at, 3)),
            "\n".join(f"{due} {member}" for member, due in changes.add.items()),
            "\n".join(changes.remove),
            "\n".join(deadlines.stamps(step.state)),
            _closes_arg(step.state),
            step.event,
            ack,
            _messages_arg(messages),
            command_what or UNKNOWN_COMMAND,
            *pairs,
        ]


@functools.cache
def _closes_arg(state: State) -> str:
    """The notice kinds a step to ``state`` closes, as ``apply.lua`` takes them: ",a,b,"."""
    closes = deadlines.closes(state)
    return f",{','.join(sorted(closes))}," if closes else ""


def _reservation(fingerprint: str, request_id: str) -> str:
    """What an idempotency key holds: the request's fingerprint and the id it reserved."""
    return f"{fingerprint} {request_id}"


def _reserved(value: str) -> tuple[str, str]:
    """(fingerprint, request id) of a reservation."""
    fingerprint, _, request_id = value.rpartition(" ")
    return fingerprint, request_id


def _flags(step: Step, command_id: str | None, assignment: str) -> str:
    """The flags of ``apply.lua`` that carry out ``step``'s effects."""
    effects = step.effects
    return "".join(
        flag
        for flag, on in (
            ("R", effects.release_squad),
            ("Q", effects.requeue),
            ("D", effects.dequeue),
            ("T", effects.cancel_offer_timer),
            ("N", effects.non_response),
            ("C", command_id is not None),
            ("A", bool(assignment)),
            ("O", effects.opens),
            ("X", effects.closes),
        )
        if on
    )
