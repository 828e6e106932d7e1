"""The load test's rolling restart (``--rolling-restart``): each hub in turn is stopped the way
an operator stops it (SIGTERM: it drains), started again on the same port with the same
settings, and waited for until ready; the squads fail over and resume. Then the run is
checked against Redis for anything lost.

* :class:`Roller` restarts the hubs during the measure phase, at even intervals, and records
  each :class:`Restart`.
* :func:`restart_summary` (pure): per restart, how long the stopped hub's phones took to be
  welcomed elsewhere, from the clients' record of every reconnection.
* :func:`read_requests` and :func:`overdue_timers` read what Redis holds at the end;
  :func:`losses` (pure) compares it with what the clients saw: every request offered, every
  offer received, every acknowledged step recorded, every timer fired.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import httpx
from redis.asyncio import Redis

from server.launch import HubProc
from server.store import keys
from tools.loadtest import stats as st

# What a rolling run changes in the hubs unless told otherwise: an unanswered offer expires
# within the run, and time_scale 0.01 makes accept limits of 2-36 s, so offer timers and
# deadline notices fire during it.
HUB_SETTINGS = {"offer_window_s": "5", "time_scale": "0.01"}
IGNORE_SHARE = 0.02  # share of offers the squads leave unanswered, to expire
EXIT_TIMEOUT_S = 60.0  # a draining hub not gone by then is killed (and the report says so)
READY_TIMEOUT_S = 60.0
BASELINE_S = 2.0  # the other hubs' CPU is read this long before a restart, for a baseline
SETTLE_TIMEOUT_S = 120.0  # the next restart waits this long at most for every phone back
TIMER_SLACK_S = 3.0  # a timer due longer ago than this at the end should have fired
# A milestone met this soon after its deadline may have removed the deadline's timer before
# the timer's poll came round (it fires only while the milestone is unmet): no notice owed.
# When the run's timers fired later than this (an overloaded machine), the grace is the
# latest lateness seen instead (see _deadlines).
DEADLINE_GRACE_S = 2.0
# Step command -> the timeline event its commit records.
STEP_EVENTS = {
    "accept": "accepted",
    "enroute": "en_route",
    "arrive": "arrived",
    "resolve": "resolved",
}
# Milestone -> (deadline field of the request, the event that meets it, notice kinds it raises)
MILESTONES = {
    "accept": ("accept_by", "accepted", ("accept", "waiting")),
    "arrive": ("arrive_by", "arrived", ("arrive",)),
    "resolve": ("resolve_by", "resolved", ("resolve",)),
}


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, a zombie's too (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Restart:
    """One hub's restart; times are ``time.monotonic()``."""

    hub: int
    port: int
    pid: int  # the stopped process
    phones: int  # squads connected to it just before SIGTERM (its health page; -1 unknown)
    sigterm_at: float
    draining_at: float = 0.0  # /readyz said draining (taken out of the request rotation)
    exited_at: float = 0.0
    ready_at: float = 0.0  # the new process's /readyz answered 200
    exit_code: int | None = None
    killed: bool = False  # did not exit by itself within EXIT_TIMEOUT_S
    back_at: float = 0.0  # every phone connected again (0: not within SETTLE_TIMEOUT_S)
    drain_cpu_s: float = 0.0  # the stopped process's CPU from SIGTERM to its exit
    others_cpu_s: float = 0.0  # the other hubs' CPU from SIGTERM to back_at
    others_cpu_before: float = 0.0  # the other hubs' CPU per second just before SIGTERM


class Rotation(Protocol):
    """Where the driver sends its HTTP requests: a hub can be taken out and put back."""

    def take_out(self, index: int) -> None: ...

    async def put_back(self, index: int, hub: HubProc) -> None: ...


class Roller:
    """Restarts ``hubs[i]`` for each i in turn; ``start(i, port)`` starts hub i's new process
    (blocking: run in a thread). ``hubs`` is updated in place, so the caller's list names the
    running processes afterwards."""

    def __init__(
        self,
        hubs: list[HubProc],
        start: Callable[[int, int], HubProc],
        rotation: Rotation,
        admin_headers: dict[str, str],
        all_back: Callable[[], bool] = lambda: True,
    ) -> None:
        self.all_back = all_back
        self.hubs = hubs
        self.start = start
        self.rotation = rotation
        self.admin_headers = admin_headers
        self.restarts: list[Restart] = []
        self.final_cpu: dict[int, float] = {}  # pid of a stopped hub -> its CPU seconds at exit
        self.started_pids: list[int] = []  # hubs started during the run

    async def run(self, start_at: float, duration_s: float) -> None:
        """Restart hub i at ``start_at + (i + 1) * duration_s / (K + 1)``, or later: not before
        the previous restart is over (its hub ready again and ``all_back()``: every phone
        connected), so that each restart's phones are its own."""
        k = len(self.hubs)
        for index in range(k):
            due = start_at + (index + 1) * duration_s / (k + 1)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await self.restart(index)

    async def restart(self, index: int) -> Restart:
        """Stop hub ``index``, start it again, and wait until every phone is back (or
        SETTLE_TIMEOUT_S); what each part cost in CPU is recorded too."""
        old = self.hubs[index]
        others = [h.process.pid for i, h in enumerate(self.hubs) if i != index]
        baseline = _cpu(others), time.monotonic()
        await asyncio.sleep(BASELINE_S)
        async with httpx.AsyncClient(base_url=old.http, timeout=30.0) as http:
            try:
                health = (await http.get("/api/v1/health", headers=self.admin_headers)).json()
                phones = int(health.get("squads_connected", 0))
            except httpx.HTTPError:  # a starved machine: restart it anyway, count unknown
                phones = -1
            restart = Restart(index, old.port, old.process.pid, phones, 0.0)
            self.restarts.append(restart)
            before, stopping = _cpu(others), proc_cpu_s(old.process.pid)
            restart.sigterm_at = time.monotonic()
            restart.others_cpu_before = (before - baseline[0]) / (restart.sigterm_at - baseline[1])
            old.process.terminate()
            # What a load balancer does: its health check sees "draining" and sends nothing
            # new there (the hub keeps serving meanwhile, for DISPATCH_DRAIN_WAIT_S).
            await _until(lambda: _draining(http), timeout_s=10.0)
            restart.draining_at = time.monotonic()
            self.rotation.take_out(index)
        restart.exit_code, restart.killed = await asyncio.to_thread(self._wait_exit, old)
        restart.exited_at = time.monotonic()
        restart.drain_cpu_s = self.final_cpu[old.process.pid] - stopping
        new = await asyncio.to_thread(self.start, index, old.port)
        self.started_pids.append(new.process.pid)
        async with httpx.AsyncClient(base_url=new.http, timeout=2.0) as http:
            await _until(lambda: _ready(http), timeout_s=READY_TIMEOUT_S)
        restart.ready_at = time.monotonic()
        self.hubs[index] = new
        await self.rotation.put_back(index, new)
        give_up = time.monotonic() + SETTLE_TIMEOUT_S
        while not self.all_back() and time.monotonic() < give_up:  # noqa: ASYNC110 - shared counters
            await asyncio.sleep(0.05)
        if self.all_back():
            restart.back_at = time.monotonic()
            restart.others_cpu_s = _cpu(others) - before
        return restart

    def _wait_exit(self, hub: HubProc) -> tuple[int | None, bool]:
        """Wait for the process to exit, read its CPU while it is a zombie, then reap it."""
        pid, killed = hub.process.pid, False
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        while True:
            # WNOWAIT: exited, not reaped, so /proc still has its CPU times.
            found = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
            if found is not None:
                break
            if time.monotonic() > deadline and not killed:
                hub.process.kill()
                killed = True
            time.sleep(0.02)
        self.final_cpu[pid] = proc_cpu_s(pid)
        try:
            code = hub.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        return code, killed


def _cpu(pids: Sequence[int]) -> float:
    return sum(proc_cpu_s(pid) for pid in pids)


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {timeout_s:.0f}s")
        await asyncio.sleep(0.02)


async def _draining(http: httpx.AsyncClient) -> bool:
    try:
        answer = await http.get("/readyz")
    except httpx.HTTPError:
        return True  # not listening any more: past draining already
    return answer.status_code == 503


async def _ready(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


# ---- the phones' moves -------------------------------------------------------------------


Move = tuple[float, float, int, int]  # lost at, welcomed again at, port lost, port joined


def restart_summary(
    restart: Restart, moves: Sequence[Move], away: Sequence[tuple[float, int]]
) -> dict[str, Any]:
    """The phones the restarted hub closed and how long each took to be welcomed on another
    hub: per-phone gap (close seen -> welcome) p50/p99/max, and ``all_back_s``, from SIGTERM
    to the last phone welcomed. A phone counts if it lost a connection to the hub's port
    between SIGTERM and the process's exit; ``away`` are those not welcomed anywhere by the
    end."""
    start, end = restart.sigterm_at, restart.exited_at + 0.5

    def of_hub(at: float, port: int) -> bool:
        return port == restart.port and start <= at <= end

    moved = [m for m in moves if of_hub(m[0], m[2])]
    takeover = (
        restart.others_cpu_s - restart.others_cpu_before * (restart.back_at - start)
        if restart.back_at
        else None
    )
    gaps = [back - lost for lost, back, _, _ in moved]
    last_back = max((m[1] for m in moved), default=None)
    first_close = min((m[0] for m in moved), default=None)
    return {
        "hub": restart.hub,
        "port": restart.port,
        "phones": restart.phones,
        "moved": len(moved),
        "moved_to_same_port": sum(1 for m in moved if m[3] == restart.port),
        "not_back": sum(1 for at, port in away if of_hub(at, port)),
        "gap_s": _seconds(gaps),
        "all_back_s": _round(last_back - start if last_back is not None else None),
        "first_close_s": _round(first_close - start if first_close is not None else None),
        "closes_spread_s": _round(
            max(m[0] for m in moved) - first_close if first_close is not None else None
        ),
        "draining_after_s": _round(restart.draining_at - start),
        "exited_after_s": _round(restart.exited_at - start),
        "ready_again_after_s": _round(restart.ready_at - start),
        "exit_code": restart.exit_code,
        "killed": restart.killed,
        # CPU: the stopped process from SIGTERM to its exit (closing its sessions, handing
        # on, recording squads offline), and what the move cost the other hubs beyond their
        # rate just before (hellos, resumes), per phone moved
        "drain_cpu_s": _round(restart.drain_cpu_s),
        "drain_cpu_ms_per_phone": _per_phone(restart.drain_cpu_s, len(moved)),
        "takeover_cpu_s": _round(takeover),
        "takeover_cpu_ms_per_phone": _per_phone(takeover, len(moved)),
    }


def move_dispatch(
    restart: Restart,
    moves: Sequence[Move],
    intakes: Sequence[st.Intake],
    offers: Sequence[tuple[str, str, str, float]],
    squad_moves: Sequence[tuple[str, float, float]] = (),
) -> dict[str, Any]:
    """Intake -> offer for the requests sent while the restarted hub's phones moved (from
    SIGTERM to the last of them welcomed elsewhere): from the intake's send to the first
    offer of its request received by any squad, whether it was offered at intake or queued
    first (the run's ``dispatch_ms`` counts only requests offered at intake, to the squad
    the API named). ``offers``: (request, squad, assignment, received at).

    ``waited_for_a_move``: those whose first offer surely went to a squad between hubs: the
    intake was answered (the offer made) before the squad was welcomed back after a lost
    connection, and the offer received only after that (it waited in its outbox for the
    resume). A lower bound: an offer made just before the welcome but answered after it is
    not counted. ``squad_moves``: (squad, lost at, welcomed again at) of every
    reconnection."""
    start = restart.sigterm_at
    end = max(
        (
            back
            for lost, back, port, _ in moves
            if port == restart.port and start <= lost <= restart.exited_at + 0.5
        ),
        default=start,
    )
    first: dict[str, float] = {}
    first_to: dict[str, str] = {}
    for request, squad, _, at in offers:
        if request not in first or at < first[request]:
            first[request], first_to[request] = at, squad
    away: dict[str, list[tuple[float, float]]] = {}
    for squad, lost, back in squad_moves:
        away.setdefault(squad, []).append((lost, back))

    def waited(intake: st.Intake) -> bool:
        at = first[intake.request_id]
        return any(
            lost < at and 0 < intake.answered_at < back <= at
            for lost, back in away.get(first_to[intake.request_id], [])
        )

    sent = [i for i in intakes if i.status == 201 and start <= i.sent_at <= end]
    latencies = [(first[i.request_id] - i.sent_at) * 1000.0 for i in sent if i.request_id in first]
    return {
        "window_s": _round(end - start),
        "requests": len(sent),
        "queued_at_intake": sum(1 for i in sent if not i.assignment),
        "never_offered": sum(1 for i in sent if i.request_id not in first),
        "waited_for_a_move": sum(1 for i in sent if i.request_id in first and waited(i)),
        "dispatch_ms": st.summarize(latencies, (50, 95, 99), digits=1),
        "dispatch_max_ms": _round(max(latencies)) if latencies else None,
        # the HTTP answer to the intake: how busy the hub taking the phones was
        "intake_response_ms": st.summarize(
            [(i.answered_at - i.sent_at) * 1000.0 for i in sent], (50, 95, 99), digits=1
        ),
    }


def _seconds(values: Sequence[float]) -> dict[str, float | None]:
    summary = st.summarize(values, (50, 99))
    return summary | {"max": _round(max(values)) if values else None}


def _per_phone(cpu_s: float | None, phones: int) -> float | None:
    return round(cpu_s / phones * 1000, 3) if cpu_s is not None and phones else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def restarts_json(restarts: Iterable[Restart]) -> list[dict[str, Any]]:
    return [asdict(r) for r in restarts]


# ---- what Redis holds at the end ------------------------------------------------------------


@dataclass
class RequestSeen:
    """A request as Redis holds it: its record, timeline and notices."""

    id: str
    fields: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.fields.get("state", "")


async def read_requests(
    redis: Redis, request_ids: Sequence[str], chunk: int = 500
) -> dict[str, RequestSeen]:
    """Record, timeline and notices of each request (missing ones are left out)."""
    if not request_ids:
        return {}
    units = await redis.hmget(keys.request_units(), list(request_ids))
    found: dict[str, RequestSeen] = {}
    located = [(rid, text(u)) for rid, u in zip(request_ids, units, strict=True) if u]
    for begin in range(0, len(located), chunk):
        part = located[begin : begin + chunk]
        pipe = redis.pipeline(transaction=False)
        for rid, unit in part:
            pipe.hgetall(keys.request(unit, rid))
            pipe.lrange(keys.timeline(unit, rid), 0, -1)
            pipe.hvals(keys.notices(unit, rid))
        replies = await pipe.execute()
        for index, (rid, _unit) in enumerate(part):
            record, timeline, notices = replies[3 * index : 3 * index + 3]
            found[rid] = RequestSeen(
                rid,
                {k.decode(): v.decode() for k, v in record.items()},
                [json.loads(e) for e in timeline],
                [json.loads(n) for n in notices],
            )
    return found


async def request_states(redis: Redis, request_ids: Sequence[str]) -> list[str]:
    """The state of each request ("" if Redis does not know it)."""
    if not request_ids:
        return []
    units = await redis.hmget(keys.request_units(), list(request_ids))
    pipe = redis.pipeline(transaction=False)
    for rid, unit in zip(request_ids, units, strict=True):
        pipe.hget(keys.request(text(unit) if unit else keys.NO_UNIT, rid), "state")
    return [s.decode() if s else "" for s in await pipe.execute()]


def text(value: bytes | str) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else value


async def overdue_timers(
    redis: Redis, units: Sequence[str], now_s: float, slack_s: float = TIMER_SLACK_S
) -> dict[str, int]:
    """Timers still waiting that were due more than ``slack_s`` before ``now_s``, by kind:
    timers that should have fired and did not."""
    pipe = redis.pipeline(transaction=False)
    for unit in units:
        pipe.zrangebyscore(keys.timers(unit), "-inf", int((now_s - slack_s) * 1000))
    overdue: dict[str, int] = {}
    for members in await pipe.execute():
        for member in members:
            kind = member.split(b":", 1)[0].decode(errors="replace")
            overdue[kind] = overdue.get(kind, 0) + 1
    return overdue


# ---- what was lost ----------------------------------------------------------------------------


@dataclass
class Seen:
    """What the squads' clients saw, over all client processes."""

    offers: set[tuple[str, str]]  # (assignment, squad) of every offer frame received
    acked: list[tuple[str, str]]  # (assignment, step) of every command answered ``ok``
    ignored: list[str]  # assignments left unanswered on purpose
    revoked: set[str]  # assignments the hub revoked
    duplicates: int  # numbered frames received twice


def losses(
    intakes: Sequence[st.Intake],
    requests: dict[str, RequestSeen],
    seen: Seen,
    overdue: dict[str, int],
    now_s: float,
) -> dict[str, Any]:
    """Every request answered and offered, every offer delivered, every acknowledged step in
    Redis, every timer fired: ``lost`` holds each loss as a count (all 0 when nothing was
    lost), ``fired`` what the timers did, with their lateness (seconds after the due time)."""
    created = [i.request_id for i in intakes if i.status == 201]
    # An intake is one caller: the request it made is found by the caller's number even when
    # no answer came (every attempt timed out), and a twin (a retry not recognised) shows.
    made_for: dict[str, int] = {}
    for request in requests.values():
        caller = request.fields.get("caller_phone", "")
        made_for[caller] = made_for.get(caller, 0) + 1
    unanswered = [i for i in intakes if i.status != 201]
    offered: dict[str, tuple[str, float]] = {}  # assignment -> (squad, respond by)
    expired_at: dict[str, float] = {}  # assignment -> when its offer expired
    recorded: set[tuple[str, str]] = set()  # (assignment, event type)
    for request in requests.values():
        for event in request.events:
            kind, assignment = str(event.get("type", "")), str(event.get("assignment", ""))
            if not assignment:
                continue
            recorded.add((assignment, kind))
            if kind == "offered":
                offered[assignment] = (str(event["squad"]), float(event["respond_by"]))
            elif kind == "offer_expired":
                expired_at[assignment] = float(event["at"])
    ignored = set(seen.ignored)
    expiry_late = [at - offered[a][1] for a, at in expired_at.items() if a in offered]
    deadlines = _deadlines(requests.values(), now_s, expiry_late)
    lost = {
        "requests_failed": sum(1 for i in unanswered if not made_for.get(i.caller)),
        "requests_made_twice": sum(1 for i in intakes if made_for.get(i.caller, 0) > 1),
        "requests_unknown": sum(1 for r in created if r not in requests),
        "requests_without_offer": sum(
            1
            for r in created
            if r in requests and not any(e.get("type") == "offered" for e in requests[r].events)
        ),
        "offers_not_received": sum(
            1 for a, (squad, _) in offered.items() if (a, squad) not in seen.offers
        ),
        "steps_not_recorded": sum(
            1 for a, step in seen.acked if (a, STEP_EVENTS.get(step, step)) not in recorded
        ),
        "offer_expiries_missing": sum(1 for a in ignored if a not in expired_at),
        "revokes_not_received": sum(
            1 for a in ignored if a in expired_at and a not in seen.revoked
        ),
        "deadline_notices_missing": deadlines["missing"],
        "timers_overdue": sum(overdue.values()),
        "duplicate_frames": seen.duplicates,
    }
    return {
        "lost": lost,
        "nothing_lost": not any(lost.values()),
        "requests": len(created),
        # made, though the intake's every attempt timed out: the caller waited, nothing lost
        "requests_made_unanswered": sum(1 for i in unanswered if made_for.get(i.caller)),
        "requests_resolved": sum(
            1 for r in created if r in requests and requests[r].state == "resolved"
        ),
        "offers_made": len(offered),
        "offers_received": len(seen.offers),
        "steps_acknowledged": len(seen.acked),
        "fired": {
            "offers_ignored": len(ignored),
            "offer_expiries": len(expired_at),  # the ignored ones, and any passed on offline
            "offer_expiry_late_s": _seconds(expiry_late),
            "revokes_received": len(seen.revoked),
            "deadline_notices_expected": deadlines["expected"],
            "deadline_notices": deadlines["issued"],
            "deadline_notice_late_s": _seconds(deadlines["late"]),
            # met after the deadline, sooner than the run's timers ran late: no notice owed
            "deadlines_met_within_grace": deadlines["moot"],
            "deadline_grace_s": deadlines["grace_s"],
            "overdue_by_kind": overdue,
        },
    }


def _deadlines(
    requests: Iterable[RequestSeen], now_s: float, other_lateness: Sequence[float]
) -> dict[str, Any]:
    """Milestones missed (met after their deadline, or not met and past it by now): each owes
    a notice of its kind (lateness: issued_at - due_at), unless it was met so soon after the
    deadline that its timer may not have had its turn yet (``moot``): within
    DEADLINE_GRACE_S, or within the latest lateness of any timer of this run
    (``other_lateness``: the offer expiries'; and the notices')."""
    found: list[tuple[float, float | None, dict[str, Any] | None]] = []  # due, met, notice
    for request in requests:
        met: dict[str, float] = {}
        for event in request.events:
            met.setdefault(str(event.get("type", "")), float(event.get("at", 0)))
        for deadline_field, event_type, kinds in MILESTONES.values():
            deadline = request.fields.get(deadline_field)
            if not deadline:
                continue
            due, when = float(deadline), met.get(event_type)
            if due > now_s - TIMER_SLACK_S or (when is not None and when <= due):
                continue  # not due yet, or met in time
            notice = next((n for n in request.notices if n.get("kind") in kinds), None)
            found.append((due, when, notice))
    late = [float(n["issued_at"]) - float(n["due_at"]) for _, _, n in found if n is not None]
    grace = max([DEADLINE_GRACE_S, *late, *other_lateness])
    moot = sum(
        1 for due, when, n in found if n is None and when is not None and when - due <= grace
    )
    return {
        "expected": len(found) - moot,
        "issued": len(late),
        "missing": len(found) - moot - len(late),
        "moot": moot,
        "grace_s": round(grace, 3),
        "late": late,
    }
