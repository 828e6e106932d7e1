"""Load test of the hub: N squads connected, positions streaming, R requests/s through the API.

    python -m tools.loadtest --squads 10000 --pos-interval 1 --rate 100 --duration 30 \
        [--hubs K] [--clients C] [--out report.json] [--profile DIR] [--storm] [--floor] \
        [--rolling-restart] [--cluster]

``--storm``: the squads hold every offer unacknowledged (so it stays in their outboxes), then
all drop and say hello again at once with ``last_seq`` 0; the report's ``storm`` says when
all were back with every frame replayed, and the resumes per second.

``--rolling-restart`` (two hubs or more): during the measure phase each hub in turn is stopped
with SIGTERM (it drains), started again on the same port and waited for until ready; the
squads fail over to another hub and resume. The report's ``rolling`` says, per restart, how
long the stopped hub's phones took to be back elsewhere, and what Redis holds at the end
against what the phones saw: every request offered, every offer received, every acknowledged
step recorded, every timer fired (a share of offers is left to expire, and deadlines are
scaled down, for that: see :mod:`tools.loadtest.rolling`).

``--cluster``: a Redis Cluster of three masters with a replica each
(:class:`server.store.embedded_cluster.EmbeddedCluster`, the packaged Redis 6.2) instead of
the one embedded Redis; the hubs and the ledger writer get its ``redis+cluster://`` URL, and
the report's Redis CPU is the six processes' sum (``redis_processes``: 6).

``--floor``: after the hub, the same workload with the same client against the bare dispatch
(:mod:`tools.loadtest.floor`); the report's ``floor`` holds its figures and ``vs_floor`` the
ratios of the hub's intake -> offer p50 and p99 to the floor's.

It starts everything itself on 127.0.0.1: an embedded Redis (never the system one), K hub
processes (``python -m server``), C load-generator processes holding the squads' sockets
(:mod:`tools.loadtest.client`). Squads are registered through the API, split round-robin
over the hubs, and requests are posted round-robin, open-loop: ``rate`` a second on average,
each when it is due (at random, as calls come; ``--arrivals even``: one every 1/rate s). The
Node probe is given the same schedule. Squads accept
every offer at once and resolve within milliseconds, so capacity frees.

Phases: start -> register -> connect -> warm-up (positions flowing) -> measure (requests for
``--duration`` s, positions ingested, CPU) -> drain (offers and commands still in flight) ->
checks (every offer the API named reached its squad) -> report.

All latencies use timestamps taken in the client processes and in this one, on the same
machine clock (see :mod:`tools.loadtest.stats`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from server.city import City, load_city
from server.launch import HubProc, spawn_hub, spawn_ledger
from server.settings import ROLES
from server.store import keys
from server.store.cluster import open_client
from server.store.embedded import EmbeddedRedis, free_port
from server.store.embedded_cluster import EmbeddedCluster
from tools.loadtest import client as lc
from tools.loadtest import floor as bare
from tools.loadtest import ledger_lag
from tools.loadtest import rolling as rr
from tools.loadtest import stats as st
from tools.loadtest.http_client import HttpError, HttpPool
from tools.loadtest.plan import RequestPlan, SquadPlan, plan_requests, plan_squads

REQUEST_TIMEOUT_S = 10.0  # an intake not answered by then counts as failed (or is retried)
RETRY_AFTER_S = 0.2
_json_encoder = msgspec.json.Encoder()
API_SAMPLE = 20  # squads read back through GET /api/v1/squads/{id}


@dataclass(frozen=True)
class Config:
    squads: int = 1000
    pos_interval: float = 1.0
    rate: float = 50.0
    duration: float = 10.0
    hubs: int = 1
    clients: int = 0  # 0: one per 6,000 squads
    out: str | None = None
    profile: str | None = None  # directory for py-spy profiles of the hubs
    seed: int = 1
    warmup: float = 0.0  # 0: one position interval plus a second
    drain: float = 10.0
    workdir: str | None = None  # keep Redis data and hub logs here (default: a temp dir)
    samples: bool = False  # add every (time, latency) of intake -> offer to the report
    hub_settings: dict[str, str] = field(default_factory=dict)
    storm: bool = False  # squads hold their offers, then all reconnect at once
    storm_concurrency: int = 1000  # handshakes in flight at once per client process
    floor: bool = False  # then the same workload against the bare dispatch
    baseline: float = 0.0  # seconds of CPU measured before the requests (per lifecycle figure)
    client: str = "python"  # or "node": the independent probe (tools/probe/probe.mjs)
    arrivals: str = "poisson"  # when requests are due: "poisson" (at random) or "even"
    rolling_restart: bool = False  # restart each hub in turn during the measure phase
    ignore_share: float | None = None  # offers left to expire; None: 2 % when rolling, else 0
    cluster: bool = False  # a Redis Cluster (3 masters, 3 replicas) instead of one Redis

    @property
    def client_processes(self) -> int:
        return self.clients or max(1, math.ceil(self.squads / 6000))

    @property
    def offers_ignored(self) -> float:
        if self.ignore_share is not None:
            return self.ignore_share
        return rr.IGNORE_SHARE if self.rolling_restart else 0.0


def log(message: str) -> None:
    print(f"[loadtest {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- processes ----------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all cores of the machine spent busy since boot (Linux /proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        pages = int(f.read().split()[1])
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


async def wait_healthy_port(
    port: int, process: subprocess.Popen[bytes], timeout_s: float = 30.0
) -> None:
    """Wait until ``GET /api/v1/health`` on ``port`` answers 200; raise if ``process`` exits
    or time runs out."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=1.0) as http:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server on port {port} exited")
            try:
                if (await http.get(f"http://127.0.0.1:{port}/api/v1/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server on port {port} did not start")
            await asyncio.sleep(0.05)


def py_spy() -> str | None:
    return shutil.which("py-spy") or next(
        (str(p) for p in [Path(sys.executable).parent / "py-spy"] if p.exists()), None
    )


def start_profiles(
    hubs: Sequence[HubProc], seconds: float, directory: str
) -> list[subprocess.Popen[bytes]]:
    """py-spy record of each hub (collapsed stacks, native frames so waits show as waits).
    Sampling pauses the hub briefly: a profiled run is slower than a measured one, and its
    samples land in system calls far more often than the time spent there (perf, which
    stops nothing, put the hub's kernel time at 17 % where py-spy put 35 % of its samples in
    system calls: docs/benchmarks.md, session 12). Read the Python frames, with a system
    call's samples counted with its caller."""
    binary = py_spy()
    if binary is None:
        log("--profile: py-spy not found (pip install py-spy); no profile taken")
        return []
    Path(directory).mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(hub.process.pid),
                "--duration",
                str(max(1, round(seconds))),
                "--rate",
                "100",
                "--native",
                "--format",
                "raw",
                "--output",
                f"{directory}/hub{i}.txt",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i, hub in enumerate(hubs)
    ]


# ---- the API --------------------------------------------------------------------------------


class Api:
    """The hubs' HTTP API; call ``i`` goes to hub ``i % K``.

    Timed intake requests use the lean client of :mod:`tools.loadtest.http_client`; the rest
    (set-up and checks, not timed) use httpx.
    """

    def __init__(self, hubs: Sequence[HubProc], tokens: dict[str, str], retries: int = 0) -> None:
        """``retries``: POST an intake that timed out or lost its connection again, this many
        times, with an Idempotency-Key (what a call-taker's console does through a restart;
        the key costs the hub a Redis write, so a plain run sends none)."""
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        self.clients = [
            httpx.AsyncClient(base_url=h.http, timeout=30.0, limits=limits) for h in hubs
        ]
        self.pools = [HttpPool("127.0.0.1", h.port) for h in hubs]
        self.headers = {role: {"Authorization": f"Bearer {t}"} for role, t in tokens.items()}
        self.out: set[int] = set()  # hubs taken out of the rotation (draining, restarting)
        self.retries = retries
        self._limits = limits

    def on(self, index: int) -> httpx.AsyncClient:
        return self.clients[self._route(index)]

    async def hub_dispatch_ms(self) -> dict[str, float | None]:
        """intake -> offer as the hubs see it (``dispatch_intake_to_offer_seconds``, from an
        intake's arrival to its offer's push, summed over the hubs): a reading that neither
        client's own delays are part of. Interpolated within the histogram's buckets (1, 2, 3,
        5, 7.5, 10, 25, 50 ms ...), so coarse; only the measured requests are in it (the hubs
        started with the run)."""
        counts: dict[float, float] = {}
        for client in self.clients:
            answer = await client.get("/metrics", headers=self.headers["admin"])
            answer.raise_for_status()
            for family in text_string_to_metric_families(answer.text):
                if family.name != "dispatch_intake_to_offer_seconds":
                    continue
                for sample in family.samples:
                    if sample.name.endswith("_bucket"):
                        bound = float(sample.labels["le"])
                        counts[bound] = counts.get(bound, 0.0) + sample.value
        return st.histogram_quantiles(list(counts.items()), scale=1000.0)

    def _route(self, index: int) -> int:
        """Hub ``index % K``, or the next one in the rotation if that one is out."""
        k = len(self.pools)
        for step in range(k):
            chosen = (index + step) % k
            if chosen not in self.out:
                return chosen
        return index % k

    def take_out(self, index: int) -> None:
        self.out.add(index)

    async def put_back(self, index: int, hub: HubProc) -> None:
        """Hub ``index`` runs again (a new process on the same port): fresh connections."""
        old_client, old_pool = self.clients[index], self.pools[index]
        self.clients[index] = httpx.AsyncClient(
            base_url=hub.http, timeout=30.0, limits=self._limits
        )
        self.pools[index] = HttpPool("127.0.0.1", hub.port)
        self.out.discard(index)
        await asyncio.gather(old_client.aclose(), old_pool.close(), return_exceptions=True)

    async def close(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients), *(p.close() for p in self.pools))

    async def register(self, index: int, plan: SquadPlan) -> tuple[str, str]:
        response = await self.on(index).post(
            "/api/v1/squads",
            headers=self.headers["admin"],
            json={"unit": plan.unit, "name": f"load squad {index}", "capacity": 1},
        )
        response.raise_for_status()
        body = response.json()
        return body["id"], body["token"]

    async def intake(self, index: int, plan: RequestPlan) -> st.Intake:
        """POST one request; ``sent_at`` is when it was due to leave (a wait for a free
        connection counts against the hub: no coordinated omission)."""
        caller = f"1380{index % 10**7:07d}"
        body = _json_encoder.encode(
            {
                "caller_phone": caller,
                "category": plan.category,
                "description": "load test request",
                "lat": plan.lat,
                "lon": plan.lon,
            }
        )
        headers = self.headers["calltaker"] | {"Content-Type": "application/json"}
        if self.retries:  # a retry finds the request its first attempt made, not a twin
            headers["Idempotency-Key"] = f"loadtest-{index}"
        sent_at = time.monotonic()
        for attempt in range(1, self.retries + 2):
            try:
                response = await asyncio.wait_for(
                    self.pools[self._route(index)].request(
                        "POST", "/api/v1/requests", headers, body
                    ),
                    REQUEST_TIMEOUT_S,
                )
                break
            except (TimeoutError, HttpError) as exc:
                failed = "timeout" if isinstance(exc, TimeoutError) else "connection"
                if attempt > self.retries:
                    return st.Intake(sent_at, 0, error=failed, attempts=attempt, caller=caller)
                await asyncio.sleep(RETRY_AFTER_S)
        answered_at = time.monotonic()
        reply = _reply(response.body)
        # 200: a retry's answer, the request the first attempt made
        if response.status != 201 and not (attempt > 1 and response.status == 200):
            error = reply.get("error")
            code = error.get("code", "") if isinstance(error, dict) else ""
            return st.Intake(
                sent_at,
                response.status,
                answered_at=answered_at,
                error=code,
                attempts=attempt,
                caller=caller,
            )
        return st.Intake(
            sent_at,
            201,
            reply.get("id", ""),
            reply.get("squad") or "",
            reply.get("assignment") or "",
            answered_at,
            attempts=attempt,
            caller=caller,
        )

    async def offers_of(self, index: int, request_id: str) -> list[tuple[str, str]]:
        """(assignment, squad) of every offer in a request's timeline."""
        response = await self.on(index).get(
            f"/api/v1/requests/{request_id}", headers=self.headers["center"]
        )
        response.raise_for_status()
        return [
            (e["assignment"], e["squad"])
            for e in response.json()["timeline"]
            if e.get("type") == "offered"
        ]

    async def fixed_at(self, index: int, squad: str) -> float | None:
        response = await self.on(index).get(
            f"/api/v1/squads/{squad}", headers=self.headers["center"]
        )
        response.raise_for_status()
        position = response.json().get("position")
        return float(position["fixed_at"]) if position else None

    async def health(self) -> list[dict[str, Any]]:
        """Each hub's health with its details (counters), which need the admin token."""
        bodies = await asyncio.gather(
            *(c.get("/api/v1/health", headers=self.headers["admin"]) for c in self.clients)
        )
        return [b.json() for b in bodies]

    async def sessions(self) -> list[int]:
        return [int(h.get("squads_connected", 0)) for h in await self.health()]

    async def positions_written(self) -> int | None:
        """Fixes the hubs wrote since they started, if their health page tells."""
        counts = [h.get("positions_written") for h in await self.health()]
        known = [c for c in counts if isinstance(c, int)]
        return sum(known) if len(known) == len(counts) else None


def _reply(body: bytes) -> dict[str, Any]:
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


async def register_all(
    api: Api, plans: Sequence[SquadPlan], hubs: Sequence[HubProc], concurrency: int = 16
) -> list[lc.SquadSpec]:
    gate = asyncio.Semaphore(concurrency)

    ports = [h.port for h in hubs]

    async def one(index: int, plan: SquadPlan) -> lc.SquadSpec:
        async with gate:
            squad, token = await api.register(index, plan)
        own = index % len(hubs)  # its own hub first, then the others: where it fails over to
        return lc.SquadSpec(squad, token, (*ports[own:], *ports[:own]), plan.lat, plan.lon)

    return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(plans))))


async def drive_requests(api: Api, plans: Sequence[RequestPlan]) -> list[st.Intake]:
    """Open loop: each request leaves when it is due (``at_s`` after the start), whatever
    happened to the others."""
    start = time.monotonic() + 0.01
    tasks = []
    for index, plan in enumerate(plans):
        delay = start + plan.at_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(api.intake(index, plan)))
    return list(await asyncio.gather(*tasks))


# ---- measurements -------------------------------------------------------------------------


async def sample_ingest(
    redis: Redis, units: Sequence[str], window_s: float, slack_s: float, until: asyncio.Event
) -> list[int]:
    """Every ``window_s``: how many squads' last fix (the hub's time of receipt) lies in the
    window that ended ``slack_s`` ago. The slack lets a fix reach Redis (flush interval plus
    event-loop lag); it must stay below the position interval minus the window, or a squad's
    next fix would replace the one being counted. A hub lagging more than the slack is
    under-counted: the hub's own counter (health page), when it has one, is preferred."""
    samples: list[int] = []
    next_at = time.monotonic() + window_s
    while not until.is_set():
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        next_at += window_s
        end = time.time() - slack_s
        pipe = redis.pipeline(transaction=False)
        for unit in units:
            pipe.zcount(keys.fix_times(unit), f"({end - window_s}", end)
        samples.append(sum(await pipe.execute()))
    return samples


@dataclass
class CpuMark:
    at: float
    cpu: dict[int, float]
    machine: float


def cpu_mark(pids: Sequence[int]) -> CpuMark:
    return CpuMark(time.monotonic(), {pid: proc_cpu_s(pid) for pid in pids}, machine_busy_s())


def cpu_between(before: CpuMark, after: CpuMark, pids: Sequence[int]) -> list[float]:
    wall = after.at - before.at
    return [st.cpu_percent(before.cpu[p], after.cpu[p], wall) for p in pids]


class Clients:
    """The load-generator processes and their shared counters."""

    def __init__(
        self,
        specs: Sequence[lc.SquadSpec],
        count: int,
        config: lc.ClientConfig,
    ) -> None:
        ctx = mp.get_context("spawn")
        self.specs = specs
        self.go, self.stop, self.storm = ctx.Event(), ctx.Event(), ctx.Event()
        self.results: Any = ctx.Queue()
        self.counters = [ctx.Array("q", lc.N_COUNTERS, lock=False) for _ in range(count)]
        self.processes = [
            ctx.Process(
                target=lc.client_main,
                name=f"loadtest-client-{i}",
                daemon=True,
                args=(
                    specs[i::count],
                    config,
                    self.counters[i],
                    self.go,
                    self.stop,
                    self.results,
                    i,
                    self.storm,
                ),
            )
            for i in range(count)
        ]
        for process in self.processes:
            process.start()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def total(self, counter: int) -> int:
        return sum(int(c[counter]) for c in self.counters)

    def alive(self) -> bool:
        return all(p.is_alive() for p in self.processes)

    async def collect(self, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        self.stop.set()
        results: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while len(results) < len(self.processes) and time.monotonic() < deadline:
            try:
                index, result = await asyncio.to_thread(self.results.get, True, 1.0)
            except Exception:  # noqa: BLE001 - queue.Empty: look again
                continue
            results[index] = result
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        crashed = [r["crashed"] for r in results.values() if "crashed" in r]
        if crashed or len(results) < len(self.processes):
            raise RuntimeError(f"client processes failed: {crashed or 'no result in time'}")
        return [results[i] for i in sorted(results)]


async def wait_for(check: Any, timeout_s: float, what: str, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            log(f"gave up waiting for {what} after {timeout_s:.0f}s")
            return False
        await asyncio.sleep(interval_s)
    return True


# ---- the run --------------------------------------------------------------------------------


@dataclass
class Observed:
    """Everything the measure phase saw, before the report's arithmetic."""

    intakes: list[st.Intake]
    ingest_samples: list[int]
    ingest_window_s: float
    pos_sent: int
    measure_s: float
    hub_cpu: list[float]
    redis_cpu: float
    client_cpu: list[float]
    api_fresh: float | None
    driver_cpu: float  # this process: registration, requests, sampling
    written: int | None  # fixes the hubs wrote during the window (their counter), if known
    machine_cpu: float  # all processes of the machine, % of one core (2 cores: up to 200)
    other_cpu: float  # processes that are not part of this test
    measure_start: float = 0.0  # monotonic
    pids: list[int] = field(default_factory=list)  # hubs, Redis, clients, this process
    timings: dict[str, float] = field(default_factory=dict)
    ledger: dict[str, Any] = field(default_factory=dict)  # the writer: rate, lag (ledger_lag)
    storm_cpu: dict[str, Any] = field(default_factory=dict)  # the storm's CPU, by process
    hub_idle_cpu: list[float] | None = None  # --baseline: the hubs before the requests


async def run(config: Config) -> dict[str, Any]:
    lc.raise_open_files_limit()  # inherited by the hubs, Redis and the client processes
    city = load_city()
    rng = random.Random(config.seed)
    squad_plans = plan_squads(city, config.squads, rng)
    request_plans = plan_requests(
        city,
        round(config.rate * config.duration),
        squad_plans,
        rng,
        config.duration,
        config.arrivals,
    )
    tokens: dict[str, str] = {role: f"{role}-{secrets.token_urlsafe(12)}" for role in ROLES}
    # Every simulated phone connects from this machine's one address: lift the per-address
    # cap meant for real clients (unless the run sets it).
    # The ledger writer runs in its own process (as in a deployment), not in the hubs.
    hub_settings = {"max_connections_per_address": "0", "ledger_in_hub": "0", **config.hub_settings}
    if config.storm:  # offers must wait in the outboxes, not move on, until the storm
        hub_settings = {"offer_window_s": "3600", **hub_settings}
    if config.rolling_restart:  # offer timers and deadlines fire within the run
        hub_settings = {**rr.HUB_SETTINGS, **hub_settings}
    with (
        _workdir(config.workdir) as tmp,
        (
            EmbeddedCluster(tmp / "cluster") if config.cluster else EmbeddedRedis(tmp / "redis")
        ) as redis_server,
    ):
        log(f"embedded Redis at {redis_server.public_url}")
        hubs: list[HubProc] = []
        ledger = spawn_ledger(redis_server.url, tmp / "hub0", log_path=tmp / "ledger.log")
        try:
            hubs += await asyncio.gather(
                *(
                    asyncio.to_thread(
                        spawn_hub,
                        redis_server.url,
                        tokens,
                        tmp / f"hub{i}",
                        hub_settings,
                        log_path=tmp / f"hub{i}.log",
                    )
                    for i in range(config.hubs)
                )
            )

            def restart(index: int, port: int) -> HubProc:
                """Hub ``index`` again: same port, data directory, settings and log."""
                return spawn_hub(
                    redis_server.url,
                    tokens,
                    tmp / f"hub{index}",
                    hub_settings,
                    port=port,
                    log_path=tmp / f"hub{index}.log",
                )

            report = await _run_with(
                config,
                city,
                hubs,
                redis_server,
                squad_plans,
                request_plans,
                tokens,
                WriterProcess(ledger.pid, tmp / "hub0" / "ledger.sqlite3"),
                restart,
            )
        finally:
            for hub in hubs:
                hub.stop()
            ledger.terminate()
            ledger.wait(timeout=10)
        if config.floor:
            floor = await run_floor(config, redis_server, squad_plans, request_plans, tmp)
            report["floor"] = floor
            report["vs_floor"] = st.versus_floor(
                report["dispatch_ms"],
                floor["dispatch_ms"],
                report.get("hub_cpu_ms_per_lifecycle"),
                floor["cpu_ms_per_lifecycle"],
            )
            log(f"hub / bare dispatch, intake -> offer: {report['vs_floor']}")
        return report


RedisServer = EmbeddedRedis | EmbeddedCluster


def server_pids(server: RedisServer) -> list[int]:
    """The Redis processes: the one server, or every node of the cluster."""
    nodes = server.nodes if isinstance(server, EmbeddedCluster) else [server]
    return [node.process.pid for node in nodes if node.process is not None]


@contextlib.contextmanager
def _workdir(path: str | None) -> Iterator[Path]:
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="loadtest-") as name:
        yield Path(name)


def client_config(config: Config) -> lc.ClientConfig:
    return lc.ClientConfig(
        pos_interval_s=config.pos_interval,
        hold=config.storm,
        storm_concurrency=config.storm_concurrency,
        ignore_share=config.offers_ignored,
    )


@dataclass(frozen=True, slots=True)
class WriterProcess:
    """The ledger writer process (``python -m server.ledger``) and the SQLite file it fills."""

    pid: int
    database: Path


async def _run_with(
    config: Config,
    city: City,
    hubs: list[HubProc],
    redis_server: RedisServer,
    squad_plans: list[SquadPlan],
    request_plans: list[RequestPlan],
    tokens: dict[str, str],
    writer: WriterProcess | None = None,
    restart: Callable[[int, int], HubProc] | None = None,
) -> dict[str, Any]:
    api = Api(hubs, tokens, retries=2 if config.rolling_restart else 0)
    redis = open_client(redis_server.url)[0]
    timings: dict[str, float] = {}
    try:
        started = time.monotonic()
        specs = await register_all(api, squad_plans, hubs)
        timings["register_s"] = round(time.monotonic() - started, 1)
        log(f"registered {len(specs)} squads in {timings['register_s']}s")
        if config.client == "node":
            probed = await run_probe(config, hubs, redis_server, specs, request_plans, tokens)
            return probed | {"hub_dispatch_ms": await api.hub_dispatch_ms()}
        clients = Clients(specs, config.client_processes, client_config(config))
        try:
            with lc.no_gc_pauses():
                roller = (
                    rr.Roller(
                        hubs,
                        restart,
                        api,
                        api.headers["admin"],
                        lambda: clients.total(lc.CONNECTED) >= config.squads,
                    )
                    if config.rolling_restart and restart is not None
                    else None
                )
                return await _measure(
                    config,
                    city,
                    hubs,
                    redis_server,
                    redis,
                    api,
                    clients,
                    request_plans,
                    timings,
                    writer,
                    roller,
                )
        finally:
            if not clients.stop.is_set():
                clients.stop.set()
                for process in clients.processes:
                    process.join(timeout=10)
                    if process.is_alive():
                        process.kill()
    finally:
        await api.close()
        await redis.aclose()


async def _measure(
    config: Config,
    city: City,
    hubs: list[HubProc],
    redis_server: RedisServer,
    redis: Redis,
    api: Api,
    clients: Clients,
    request_plans: list[RequestPlan],
    timings: dict[str, float],
    writer: WriterProcess | None = None,
    roller: rr.Roller | None = None,
) -> dict[str, Any]:
    started = time.monotonic()
    done = await wait_for(
        lambda: (
            clients.total(lc.CONNECTED) + clients.total(lc.FAILED) >= config.squads
            or not clients.alive()
        ),
        timeout_s=120 + config.squads / 50,
        what="connections",
    )
    timings["connect_s"] = round(time.monotonic() - started, 1)
    log(
        f"connected {clients.total(lc.CONNECTED)}/{config.squads} in {timings['connect_s']}s"
        + ("" if done else " (timed out)")
    )
    clients.go.set()
    await asyncio.sleep(config.warmup or config.pos_interval + 1.0)

    hub_pids = [h.process.pid for h in hubs]
    hub_idle_cpu = await idle_cpu(hub_pids, config.baseline) if config.baseline else None
    redis_pids = server_pids(redis_server)
    pids = [*hub_pids, *redis_pids, *clients.pids, os.getpid()]
    window = min(1.0, config.pos_interval / 2)
    slack = min(1.0, 0.8 * (config.pos_interval - window))
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(
        sample_ingest(redis, [u.code for u in city.units], window, slack, stop_sampling)
    )
    unit_codes = [u.code for u in city.units]
    stop_lag = asyncio.Event()
    lag_sampler = asyncio.create_task(ledger_lag.sample_lag(redis, unit_codes, stop_lag))
    produced_before = await ledger_lag.stream_entries(redis, unit_codes)
    recorded_before = ledger_lag.recorded_events(writer.database) if writer else None
    writer_before = cpu_mark([writer.pid]) if writer else None
    profilers = (
        start_profiles(hubs, config.duration, config.profile)
        if config.profile and not config.storm  # --storm profiles the storm instead
        else []
    )
    log(f"measuring for {config.duration}s: {len(request_plans)} requests")
    # A restarted hub's counter starts again from 0: the fix times in Redis are used then.
    written_before = None if roller else await api.positions_written()
    pos_before, before = clients.total(lc.POS_SENT), cpu_mark(pids)
    restarts = asyncio.create_task(roller.run(before.at, config.duration)) if roller else None
    if request_plans:
        intakes = await drive_requests(api, request_plans)
        await asyncio.sleep(max(0.0, before.at + config.duration - time.monotonic()))
    else:
        intakes = []
        await asyncio.sleep(config.duration)
    if restarts is not None:
        await restarts  # the last restart may end after the requests
        hub_pids = [h.process.pid for h in hubs]  # the processes running now
        pids = [*hub_pids, *pids[len(hub_pids) :]]
    pos_after, after = clients.total(lc.POS_SENT), cpu_mark(pids)
    produced_after = await ledger_lag.stream_entries(redis, unit_codes)
    recorded_after = ledger_lag.recorded_events(writer.database) if writer else None
    writer_after = cpu_mark([writer.pid]) if writer else None
    stop_lag.set()
    lag_samples = await lag_sampler
    written_after = await api.positions_written()
    stop_sampling.set()
    samples = await sampler
    for profiler in profilers:
        profiler.wait(timeout=30)
    wall = after.at - before.at
    cpu = [  # hubs, Redis, clients, this process
        st.cpu_percent(before.cpu.get(p, 0.0), after.cpu[p], wall) for p in pids
    ]
    k = len(hubs)
    if roller is not None:  # each hub's slot: its stopped process, then the new one
        for r in roller.restarts:
            cpu[r.hub] += st.cpu_percent(before.cpu.get(r.pid, 0.0), roller.final_cpu[r.pid], wall)
    machine = st.cpu_percent(before.machine, after.machine, wall)
    observed = Observed(
        intakes=intakes,
        ingest_samples=samples[1:] or samples,
        ingest_window_s=window,
        pos_sent=pos_after - pos_before,
        measure_s=after.at - before.at,
        hub_cpu=cpu[:k],
        redis_cpu=round(sum(cpu[k : k + len(redis_pids)]), 1),
        client_cpu=cpu[k + len(redis_pids) : -1],
        driver_cpu=cpu[-1],
        timings=timings,
        machine_cpu=machine,
        other_cpu=round(max(0.0, machine - sum(cpu)), 1),
        measure_start=before.at,
        pids=pids,
        hub_idle_cpu=hub_idle_cpu,
        api_fresh=await api_freshness(api, clients.specs, config.pos_interval),
        written=(
            None
            if written_before is None or written_after is None
            else written_after - written_before
        ),
    )
    observed.ledger = ledger_lag.summary(
        lag_samples,
        (recorded_before, recorded_after),
        (produced_before, produced_after),
        after.at - before.at,
        await ledger_lag.catch_up_s(redis, unit_codes),
    )
    if writer and writer_before and writer_after:
        observed.ledger["writer_cpu_percent"] = cpu_between(
            writer_before, writer_after, [writer.pid]
        )[0]
    log(
        "ledger: {events_recorded_per_s} events/s recorded of {events_produced_per_s}/s "
        "produced; lag p50 {lag_entries_p50} entries, oldest p95 {lag_oldest_ms_p95} ms, max "
        "{lag_oldest_ms_max} ms; caught up {catch_up_s} s after".format(**observed.ledger)
    )
    return await _finish(config, city, hubs, redis, api, clients, observed, roller)


async def api_freshness(
    api: Api, specs: Sequence[lc.SquadSpec], pos_interval: float
) -> float | None:
    """Share of sampled squads whose position, read back through the API, is recent."""
    squads = random.sample([s.squad for s in specs], min(API_SAMPLE, len(specs)))
    if not squads:
        return None
    fixed = await asyncio.gather(*(api.fixed_at(i, s) for i, s in enumerate(squads)))
    recent = time.time() - pos_interval - 2.0
    return round(sum(1 for f in fixed if f is not None and f >= recent) / len(squads), 3)


async def _finish(
    config: Config,
    city: City,
    hubs: list[HubProc],
    redis: Redis,
    api: Api,
    clients: Clients,
    observed: Observed,
    roller: rr.Roller | None = None,
) -> dict[str, Any]:
    if roller is not None:
        await settle(config, redis, clients, observed.intakes)
    expected = st.expected_offers(observed.intakes)
    await wait_for(
        lambda: clients.total(lc.OFFERS) >= len(expected) and clients.total(lc.PENDING) == 0,
        config.drain,
        "offers in flight",
    )
    late = [i for i in observed.intakes if i.status == 201 and not i.assignment]
    gate = asyncio.Semaphore(16)

    async def offers_of(index: int, intake: st.Intake) -> list[tuple[str, str]]:
        async with gate:
            return await api.offers_of(index, intake.request_id)

    found = await asyncio.gather(*(offers_of(i, it) for i, it in enumerate(late)))
    late_offers = [offer for offers in found for offer in offers]
    await wait_for(
        lambda: (
            clients.total(lc.OFFERS) >= len(expected) + len(late_offers)
            and clients.total(lc.PENDING) == 0
        ),
        config.drain,
        "late offers",
    )
    if config.storm:
        observed.storm_cpu = await storm(
            clients, len(clients.specs), hubs, observed.pids, config.profile
        )
    connected = clients.total(lc.CONNECTED)
    sessions = await api.sessions()
    hub_rss = [proc_rss_mb(h.process.pid) for h in hubs]
    redis_checks = await check_redis(redis, [u.code for u in city.units])
    if roller is not None:
        # Every request Redis knows (an intake that timed out may still have made one).
        requests = await rr.read_requests(
            redis, [rr.text(k) for k in await redis.hkeys(keys.request_units())]
        )
        offered = sum(1 for r in requests.values() for e in r.events if e["type"] == "offered")
        await wait_for(lambda: clients.total(lc.OFFERS) >= offered, config.drain, "every offer")
        overdue = await rr.overdue_timers(redis, [u.code for u in city.units], time.time())
    results = await clients.collect()
    report = build_report(
        config,
        observed,
        results,
        expected + late_offers,
        connected,
        sessions,
        hub_rss,
        redis_checks,
        len(late),
    )
    if observed.ledger:
        report["ledger"] = observed.ledger
    if roller is None:  # a restarted hub starts its histogram again
        report["hub_dispatch_ms"] = await api.hub_dispatch_ms()
    if roller is not None:
        report["rolling"] = rolling_report(roller, observed, results, requests, overdue)
        log(f"rolling restart: lost {report['rolling']['lost']}")
    return report


def rolling_report(
    roller: rr.Roller,
    observed: Observed,
    results: list[dict[str, Any]],
    requests: dict[str, rr.RequestSeen],
    overdue: dict[str, int],
) -> dict[str, Any]:
    """Per restart, how long the phones took to move; then what was lost (see
    :func:`tools.loadtest.rolling.losses`)."""
    moves = [tuple(m) for r in results for m in r["moves"]]
    offers = [tuple(o) for r in results for o in r["offers"]]
    squad_moves = [tuple(m) for r in results for m in r.get("squad_moves", [])]
    away = [tuple(a) for r in results for a in r["away"]]
    seen = rr.Seen(
        offers={(o[2], o[1]) for r in results for o in r["offers"]},
        acked=[(a, step) for r in results for a, step in r["acked"]],
        ignored=[a for r in results for a in r["ignored"]],
        revoked={a for r in results for a in r["revoked"]},
        duplicates=sum(r["duplicates"] for r in results),
    )
    close_codes: Counter[str] = Counter()
    for r in results:
        close_codes.update({str(code): n for code, n in r["close_codes"].items()})
    start = observed.measure_start
    return {
        "restarts": [
            {"sigterm_at_s": round(restart.sigterm_at - start, 3)}
            | rr.restart_summary(restart, moves, away)  # type: ignore[arg-type]
            | {
                "during_move": rr.move_dispatch(
                    restart, moves, observed.intakes, offers, squad_moves
                )
            }  # type: ignore[arg-type]
            for restart in roller.restarts
        ],
        "close_codes": dict(close_codes),
        "requests_retried": sum(1 for i in observed.intakes if i.attempts > 1),
        # seconds into the measure phase of each intake that failed in the end
        "requests_failed_at_s": [
            round(i.sent_at - start, 3) for i in observed.intakes if i.status != 201
        ],
        **rr.losses(observed.intakes, requests, seen, overdue, time.time()),
    }


async def settle(
    config: Config, redis: Redis, clients: Clients, intakes: Sequence[st.Intake]
) -> None:
    """Until every request is resolved (an offer left to expire moves on after the offer
    window, maybe more than once), no command waits for its answer and every squad is
    connected; at most ``config.drain`` plus 30 s."""
    created = [i.request_id for i in intakes if i.status == 201]
    deadline = time.monotonic() + config.drain + 30.0
    while time.monotonic() < deadline:
        states = await rr.request_states(redis, created)
        if (
            all(state == "resolved" for state in states)
            and clients.total(lc.PENDING) == 0
            and clients.total(lc.CONNECTED) == config.squads
        ):
            return
        await asyncio.sleep(0.5)
    log("gave up waiting for every request to be resolved")


async def storm(
    clients: Clients,
    squads: int,
    hubs: Sequence[HubProc],
    pids: Sequence[int],
    profile: str | None,
) -> dict[str, Any]:
    """Every squad drops and says hello again at once (the clients time it themselves).
    Returns the CPU each kind of process took from the drop until every squad was back
    (``pids``: the hubs, Redis, the clients, this process, as in the measure phase); with
    ``profile``, py-spy records the hubs over the storm."""
    log(f"storm: {squads} squads drop and say hello again with last_seq 0")
    profilers = start_profiles(hubs, 600, profile) if profile else []
    before = cpu_mark(pids)
    clients.storm.set()
    await wait_for(
        lambda: clients.total(lc.BACK) >= squads or not clients.alive(),
        120 + squads / 50,
        "squads back after the storm",
    )
    after = cpu_mark(pids)
    for profiler in profilers:  # py-spy writes its profile when interrupted
        profiler.send_signal(signal.SIGINT)
    for profiler in profilers:
        profiler.wait(timeout=30)
    cpu = cpu_between(before, after, pids)
    k, clients_n = len(hubs), len(clients.pids)
    redis_n = len(pids) - k - clients_n - 1
    return {
        "cpu_percent": {
            "hubs": [round(c, 1) for c in cpu[:k]],
            "redis": round(sum(cpu[k : k + redis_n]), 1),
            "clients": round(sum(cpu[k + redis_n : -1]), 1),
            "driver": round(cpu[-1], 1),
            "machine": round(
                st.cpu_percent(before.machine, after.machine, after.at - before.at), 1
            ),
        },
        "cpu_wall_s": round(after.at - before.at, 3),
    }


async def check_redis(redis: Redis, units: Sequence[str]) -> dict[str, int]:
    """Offers the hubs made (stats counters) and squads whose free capacity went negative."""
    pipe = redis.pipeline(transaction=False)
    for unit in units:
        pipe.hget(keys.stats(unit), "offers")
        pipe.hvals(keys.free(unit))
    replies = await pipe.execute()
    offers = sum(int(r or 0) for r in replies[0::2])
    negative = sum(1 for values in replies[1::2] for v in values if int(v) < 0)
    return {"offers_made": offers, "free_negative": negative}


def build_report(
    config: Config,
    observed: Observed,
    results: list[dict[str, Any]],
    expected: list[tuple[str, str]],
    connected: int,
    sessions: list[int],
    hub_rss: list[float],
    redis_checks: dict[str, int],
    queued_at_intake: int,
) -> dict[str, Any]:
    offers = [st.OfferSeen(*o) for r in results for o in r["offers"]]
    dispatch = st.dispatch_latencies_ms(observed.intakes, offers)
    ack = [v for r in results for v in r["ack_ms"]]
    steps = [v for r in results for v in r["step_ms"]]
    late = [v for r in results for v in r.get("tick_late_ms", [])]
    errors: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
        failures.update(r["failures"])
    accepted = sum(1 for i in observed.intakes if i.status == 201)
    return (
        {
            "squads_connected": connected,
            "positions_per_s": _positions_per_s(observed),
            "dispatch_ms": st.summarize(dispatch),
            "ack_ms": st.summarize(ack, (50, 99)),
            "requests": accepted,
            "frames_lost": len(st.missing_offers(expected, offers)),
            "over_capacity": sum(r["over_capacity"] for r in results),
            "hubs": config.hubs,
            "hub_cpu_percent": observed.hub_cpu,
            "hub_rss_mb": hub_rss,
            # --- more detail ---
            "squads": config.squads,
            "pos_interval_s": config.pos_interval,
            "rate": config.rate,
            "duration_s": config.duration,
            "client_processes": len(results),
            "positions_sent_per_s": round(observed.pos_sent / observed.measure_s, 1),
            "positions_source": "hub counter"
            if observed.written is not None
            else "redis fix times",
            "positions_sampled_per_s": st.ingest_rate(
                observed.ingest_samples, observed.ingest_window_s
            ),
            "positions_api_fresh": observed.api_fresh,
            "hub_cpu_us_per_position": _cpu_per_position(observed),
            # --baseline: the hubs' CPU before the requests, and per request lifecycle
            "hub_idle_cpu_percent": observed.hub_idle_cpu,
            "hub_cpu_ms_per_lifecycle": _cpu_per_lifecycle(observed, accepted),
            "hub_sessions": sessions,
            "requests_sent": len(observed.intakes),
            "requests_failed": len(observed.intakes) - accepted,
            "request_failures": st.failures(observed.intakes),
            "requests_queued_at_intake": queued_at_intake,
            "intake_response_ms": st.summarize(st.response_latencies_ms(observed.intakes)),
            "dispatch_samples": len(dispatch),
            "dispatch_max_ms": round(max(dispatch), 3) if dispatch else None,
            "ack_samples": len(ack),
            "ack_max_ms": round(max(ack), 3) if ack else None,
            "step_ms": st.summarize(steps, (50, 99)),
            # how late the clients' position ticks left (a late tick is a burst of positions)
            "tick_late_ms": st.summarize(late) | {"max": round(max(late), 3) if late else None},
            "offers_expected": len(expected),
            "offers_received": len(offers),
            "offers_made": redis_checks["offers_made"],
            "free_negative": redis_checks["free_negative"],
            "revokes": sum(r["revokes"] for r in results),
            "duplicates": sum(r["duplicates"] for r in results),
            "command_errors": dict(errors),
            "auto_arrivals": sum(r["auto_arrivals"] for r in results),
            "disconnects": sum(r["disconnects"] for r in results),
            "connect_failures": dict(failures),
            "redis_cpu_percent": observed.redis_cpu,
            "client_cpu_percent": observed.client_cpu,
            "driver_cpu_percent": observed.driver_cpu,
            "machine_cpu_percent": observed.machine_cpu,
            "other_processes_cpu_percent": observed.other_cpu,
            "timings": observed.timings,
            "config": asdict(config),
        }
        | (
            {
                "storm": st.storm_summary([r["storm"] for r in results if "storm" in r])
                | observed.storm_cpu
            }
            if config.storm
            else {}
        )
        | (
            {
                "dispatch_series": st.dispatch_series(
                    observed.intakes,
                    offers,
                    observed.intakes[0].sent_at if observed.intakes else 0.0,
                )
            }
            if config.samples
            else {}
        )
    )


def _positions_per_s(observed: Observed) -> float:
    """Fixes written to the GEO index per second: from the hubs' counter when they expose
    it, else sampled from the fix times in Redis."""
    if observed.written is not None:
        return st.rate(0, observed.written, observed.measure_s)
    return st.ingest_rate(observed.ingest_samples, observed.ingest_window_s)


def _cpu_per_lifecycle(observed: Observed, lifecycles: int) -> float | None:
    """The hubs' CPU per request lifecycle (all hubs together), with ``--baseline``."""
    if observed.hub_idle_cpu is None:
        return None
    return st.cpu_ms_per_lifecycle(
        sum(observed.hub_cpu), sum(observed.hub_idle_cpu), lifecycles, observed.measure_s
    )


async def idle_cpu(pids: Sequence[int], seconds: float) -> list[float]:
    """Each process's CPU (% of a core) over the next ``seconds``: the connections and the
    positions without requests, the baseline of the per-lifecycle figure."""
    log(f"baseline: {seconds}s of CPU without requests")
    before = cpu_mark(pids)
    await asyncio.sleep(seconds)
    return cpu_between(before, cpu_mark(pids), pids)


def _cpu_per_position(observed: Observed) -> float | None:
    """Hub CPU per ingested fix, all hubs together: the whole cost when no requests run, an
    upper bound otherwise. Unlike rates, it hardly depends on what else the machine runs."""
    ingested = _positions_per_s(observed)
    if not ingested:
        return None
    return round(sum(observed.hub_cpu) / 100 / ingested * 1e6, 1)


# ---- the independent probe ------------------------------------------------------------------

PROBE = Path(__file__).resolve().parents[1] / "probe" / "probe.mjs"


async def run_probe(
    config: Config,
    hubs: list[HubProc],
    redis_server: RedisServer,
    specs: list[lc.SquadSpec],
    request_plans: list[RequestPlan],
    tokens: dict[str, str],
) -> dict[str, Any]:
    """The same squads and requests driven by the Node probe instead of this package's
    client; the hubs' and Redis' CPU is read between its measure-start and measure-end."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("--client node: no node on the PATH (and `npm ci` for @msgpack/msgpack)")
    ports = [h.port for h in hubs]
    plan = {
        "host": "127.0.0.1",
        "token": tokens["calltaker"],
        "squads": [[s.squad, s.token, s.port, s.lat, s.lon] for s in specs],
        "requests": [
            [ports[i % len(ports)], r.category, r.lat, r.lon, r.at_s]
            for i, r in enumerate(request_plans)
        ],
        "rate": config.rate,
        "duration": config.duration,
        "pos_interval": config.pos_interval,
        "warmup": config.warmup or config.pos_interval + 1.0,
        "drain": config.drain,
        "workers": config.client_processes,  # threads, as many as the load test's processes
    }
    pids = [*(h.process.pid for h in hubs), *server_pids(redis_server)]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(plan, file)
    probe = await asyncio.create_subprocess_exec(
        node, str(PROBE), file.name, stdout=asyncio.subprocess.PIPE
    )
    assert probe.stdout is not None
    marks: dict[str, CpuMark] = {}
    last = b""
    try:
        async for line in probe.stdout:
            word = line.strip().decode()
            if word in ("measure-start", "measure-end"):
                marks[word] = cpu_mark([*pids, probe.pid])
                log(f"probe: {word}")
            elif word:
                last = line
        await probe.wait()
    finally:
        os.unlink(file.name)
    if probe.returncode != 0 or len(marks) != 2:
        raise RuntimeError(f"the probe failed ({probe.returncode})")
    result: dict[str, Any] = json.loads(last)
    cpu = cpu_between(marks["measure-start"], marks["measure-end"], [*pids, probe.pid])
    wall = marks["measure-end"].at - marks["measure-start"].at
    return result | {
        "hubs": len(hubs),
        "hub_cpu_percent": cpu[: len(hubs)],
        "redis_cpu_percent": cpu[len(hubs)],
        "probe_process_cpu_percent": cpu[-1],
        "machine_cpu_percent": st.cpu_percent(
            marks["measure-start"].machine, marks["measure-end"].machine, wall
        ),
        "squads": config.squads,
        "pos_interval_s": config.pos_interval,
        "rate": config.rate,
        "duration_s": config.duration,
        "config": asdict(config),
    }


# ---- the bare dispatch ----------------------------------------------------------------------


async def run_floor(
    config: Config,
    redis_server: RedisServer,
    squad_plans: list[SquadPlan],
    request_plans: list[RequestPlan],
    tmp: Path,
) -> dict[str, Any]:
    """The same squads, positions and requests, with the same client processes, against the
    bare dispatch (:mod:`tools.loadtest.floor`) on the same Redis (flushed first)."""
    redis = Redis.from_url(redis_server.url)
    await redis.flushdb()
    squads = {f"F{i:05d}": plan.unit for i, plan in enumerate(squad_plans)}
    squads_file = tmp / "floor-squads.json"
    squads_file.write_text(json.dumps(squads))
    port = free_port()
    process = bare.start(port, redis_server.url, squads_file)
    try:
        await wait_healthy_port(port, process)
        log(f"bare dispatch on port {port}: the same workload")
        specs = [
            lc.SquadSpec(squad, "floor", (port,), plan.lat, plan.lon)
            for squad, plan in zip(squads, squad_plans, strict=True)
        ]
        return await _measure_floor(config, HubProc(port, process), specs, request_plans)
    finally:
        process.terminate()
        process.wait(timeout=10)
        await redis.flushdb()
        await redis.aclose()


async def _measure_floor(
    config: Config, server: HubProc, specs: list[lc.SquadSpec], request_plans: list[RequestPlan]
) -> dict[str, Any]:
    api = Api([server], {"calltaker": "floor"})
    clients = Clients(
        specs, config.client_processes, lc.ClientConfig(pos_interval_s=config.pos_interval)
    )
    pid = server.process.pid
    try:
        with lc.no_gc_pauses():
            await wait_for(
                lambda: (
                    clients.total(lc.CONNECTED) + clients.total(lc.FAILED) >= len(specs)
                    or not clients.alive()
                ),
                120 + len(specs) / 50,
                "connections to the bare dispatch",
            )
            clients.go.set()
            await asyncio.sleep(config.warmup or config.pos_interval + 1.0)
            idle = (await idle_cpu([pid], config.baseline))[0] if config.baseline else None
            pos_before, before = clients.total(lc.POS_SENT), cpu_mark([pid])
            intakes = await drive_requests(api, request_plans) if request_plans else []
            await asyncio.sleep(max(0.0, before.at + config.duration - time.monotonic()))
            pos_after, after = clients.total(lc.POS_SENT), cpu_mark([pid])
            expected = st.expected_offers(intakes)
            await wait_for(
                lambda: (
                    clients.total(lc.OFFERS) >= len(expected) and clients.total(lc.PENDING) == 0
                ),
                config.drain,
                "offers of the bare dispatch",
            )
            connected = clients.total(lc.CONNECTED)
            results = await clients.collect()
    finally:
        await api.close()
        if not clients.stop.is_set():
            clients.stop.set()
            for process in clients.processes:
                process.join(timeout=10)
                if process.is_alive():
                    process.kill()
    offers = [st.OfferSeen(*o) for r in results for o in r["offers"]]
    dispatch = st.dispatch_latencies_ms(intakes, offers)
    wall = after.at - before.at
    cpu = st.cpu_percent(before.cpu[pid], after.cpu[pid], wall)
    positions = (pos_after - pos_before) / wall
    accepted = sum(1 for i in intakes if i.status == 201)
    return {
        "squads_connected": connected,
        "dispatch_ms": st.summarize(dispatch),
        "ack_ms": st.summarize([v for r in results for v in r["ack_ms"]], (50, 99)),
        "requests": accepted,
        "requests_failed": len(intakes) - accepted,
        "frames_lost": len(st.missing_offers(expected, offers)),
        "cpu_percent": cpu,
        "idle_cpu_percent": idle,
        "cpu_ms_per_lifecycle": (
            None if idle is None else st.cpu_ms_per_lifecycle(cpu, idle, accepted, wall)
        ),
        "positions_sent_per_s": round(positions, 1),
        # the whole cost with --rate 0, an upper bound otherwise (as the hub's figure)
        "cpu_us_per_position": round(cpu / 100 / positions * 1e6, 1) if positions else None,
    }


# ---- command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m tools.loadtest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--squads", type=int, default=1000)
    parser.add_argument(
        "--pos-interval", type=float, default=1.0, help="seconds between two positions of a squad"
    )
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of requests")
    parser.add_argument("--hubs", type=int, default=1)
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="a Redis Cluster of 3 masters with a replica each instead of one Redis",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=0,
        help="load-generator processes, or the Node probe's threads (default: 1 per 6,000 squads)",
    )
    parser.add_argument("--out", help="write the JSON report here")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy record each hub during the measure phase, or with --storm during the storm "
        "(collapsed stacks in DIR/hubN.txt)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument(
        "--baseline",
        type=float,
        default=0.0,
        metavar="S",
        help="measure the hubs' CPU for S seconds before the requests (same connections and "
        "positions) and report the CPU per request lifecycle (hub_cpu_ms_per_lifecycle; with "
        "--floor the bare dispatch's too, and the ratio)",
    )
    parser.add_argument("--drain", type=float, default=10.0)
    parser.add_argument("--workdir", help="keep Redis data and hub logs in this directory")
    parser.add_argument(
        "--samples",
        action="store_true",
        help="include every intake -> offer latency with its send time",
    )
    parser.add_argument(
        "--storm",
        action="store_true",
        help="squads hold their offers, then all drop and say hello again at once (last_seq 0)",
    )
    parser.add_argument(
        "--storm-concurrency",
        type=int,
        default=1000,
        help="storm: handshakes in flight at once per client process",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="then run the bare dispatch with the same client and report the ratios",
    )
    parser.add_argument(
        "--client",
        choices=("python", "node"),
        default="python",
        help="node: drive the hubs with the independent probe (tools/probe/probe.mjs)",
    )
    parser.add_argument(
        "--arrivals",
        choices=("poisson", "even"),
        default="poisson",
        help="when requests are due: at random as calls come (poisson, the default), or one "
        "every 1/rate s (even: sessions 1-6 ran so)",
    )
    parser.add_argument(
        "--rolling-restart",
        action="store_true",
        help="restart each hub in turn during the measure phase (SIGTERM, same port); "
        "needs --hubs 2 or more",
    )
    parser.add_argument(
        "--ignore-share",
        type=float,
        default=None,
        help="share of offers the squads leave to expire (default 0.02 with "
        "--rolling-restart, else 0)",
    )
    parser.add_argument(
        "--hub-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a hub setting, as DISPATCH_NAME (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.squads < 1 or args.hubs < 1 or args.duration <= 0 or args.rate < 0:
        parser.error("need --squads >= 1, --hubs >= 1, --duration > 0, --rate >= 0")
    if args.rolling_restart and (args.hubs < 2 or args.storm or args.profile):
        parser.error("--rolling-restart needs --hubs 2 or more, and no --storm or --profile")
    if args.rolling_restart and args.client != "python":
        parser.error("--rolling-restart drives the hubs with the python client")
    if args.ignore_share is not None and not 0 <= args.ignore_share < 1:
        parser.error("--ignore-share is a share: 0 <= it < 1")
    if args.cluster and args.floor:
        parser.error("--floor runs on one Redis: not with --cluster")
    if args.baseline < 0 or (
        args.baseline and (args.storm or args.rolling_restart or args.client != "python")
    ):
        parser.error(
            "--baseline needs S >= 0, and squads walking each request to its end on the same "
            "hubs: not with --storm, --rolling-restart or --client node"
        )
    settings = dict(s.split("=", 1) for s in args.hub_setting)
    return Config(
        squads=args.squads,
        pos_interval=args.pos_interval,
        rate=args.rate,
        duration=args.duration,
        hubs=args.hubs,
        clients=args.clients,
        out=args.out,
        profile=args.profile,
        seed=args.seed,
        warmup=args.warmup,
        baseline=args.baseline,
        drain=args.drain,
        workdir=args.workdir,
        samples=args.samples,
        hub_settings=settings,
        storm=args.storm,
        storm_concurrency=args.storm_concurrency,
        floor=args.floor,
        client=args.client,
        arrivals=args.arrivals,
        rolling_restart=args.rolling_restart,
        ignore_share=args.ignore_share,
        cluster=args.cluster,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        import uvloop

        report = uvloop.run(run(config))
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        report = asyncio.run(run(config))
    text = json.dumps(report, indent=2)
    if config.out:
        Path(config.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
