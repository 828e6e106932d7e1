"""The one way to start this server's processes on this machine: the embedded Redis and
``python -m server`` hubs, for the demo (``python3 dev.py serve``), the tests' fixtures, the
load test and the benchmarks.

:func:`spawn_hub` starts one hub and waits until it answers; :func:`start_redis` starts the
embedded Redis; :class:`LocalCluster` is an embedded Redis plus K hubs, as a context manager
that stops them all (hubs first, then Redis).

It lives in ``server/`` because the demo, a product feature, starts a hub with it, and the
product must not import a tool (``tools/`` imports the product, never the reverse). It knows
nothing of what a hub does: only how one is started, found healthy and stopped.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from server.store.embedded import EmbeddedRedis, free_port, stop_with_parent

ROLES = ("admin", "calltaker", "center", "wall")
ROOT = Path(__file__).resolve().parents[1]  # the checkout: ``python -m server`` runs from it


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread while a child is spawned.

    A child inherits the signal mask across fork and exec, and redis-server installs a
    handler without unblocking it, so the terminal's Ctrl-C never reaches that Redis; it
    still stops on SIGTERM. (EmbeddedRedis spawns it itself, so a new session is not an
    option there.)
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def start_redis(data_dir: Path, *, detach: bool = False) -> EmbeddedRedis:
    """Start the embedded Redis with its data in ``data_dir``. ``detach``: out of the
    terminal's Ctrl-C, so that the caller decides when it stops (the demo stops it last)."""
    if not detach:
        return EmbeddedRedis(data_dir).start()
    with _sigint_blocked():
        return EmbeddedRedis(data_dir).start()


@dataclass
class HubProc:
    """One running hub process."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path | None = None
    host: str = "127.0.0.1"

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://{self.host}:{self.port}/ws/field"

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as a crash."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM and wait for the graceful shutdown (SIGKILL after ``timeout_s``)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log().splitlines()[-lines:])
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


def tokens_env(tokens: Mapping[str, str]) -> str:
    """DISPATCH_TOKENS for role -> token."""
    return ",".join(f"{role}:{token}" for role, token in tokens.items())


# The commands every deployment runs (deploy/compose.yaml and the Dockerfile run these too,
# after "python"; tests/test_deploy.py holds them together).
LEDGER_COMMAND = ("-m", "server.ledger")


def hub_command(host: str, port: int) -> tuple[str, ...]:
    """A hub process's arguments after the interpreter."""
    return ("-m", "server", "--host", host, "--port", str(port))


def spawn_hub(
    redis_url: str,
    tokens: Mapping[str, str],
    data_dir: Path,
    settings: Mapping[str, object] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_path: Path | None = None,
    log_level: str = "warning",
    detach: bool = False,
    timeout_s: float = 30.0,
) -> HubProc:
    """Start ``python -m server`` on ``port`` (default: a free one) and wait until its health
    check answers.

    ``settings`` become DISPATCH_<NAME> variables (a name already starting with
    ``DISPATCH_`` is taken as it is). Output is appended to ``log_path`` (or goes nowhere).
    ``detach``: the hub runs in its own session, out of the terminal's Ctrl-C, so that the
    caller decides the order of shutdown. Raises RuntimeError, with the log, if it exits or
    does not answer in time.
    """
    if port is None:
        port = free_port()
    else:
        _check_port_free(host, port)
    env = dict(
        os.environ,
        REDIS_URL=redis_url,
        DISPATCH_TOKENS=tokens_env(tokens),
        DISPATCH_DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="1",
    )
    env.update({_env_name(k): str(v) for k, v in (settings or {}).items()})
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") if log_path else contextlib.nullcontext() as log:
        process = subprocess.Popen(
            [sys.executable, *hub_command(host, port), "--log-level", log_level],
            cwd=ROOT,
            env=env,
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
            preexec_fn=stop_with_parent,  # never left behind by a killed owner
        )
    hub = HubProc(port, process, log_path, host)
    health = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/api/v1/health"
    try:
        _wait_healthy(hub, health, timeout_s)
    except BaseException:  # Ctrl-C included: no hub is left behind without an owner
        hub.kill()
        raise
    return hub


def _check_port_free(host: str, port: int) -> None:
    """Raise RuntimeError if something listens on ``host:port`` already. Otherwise the new
    hub fails to bind and exits, but the health check may first get its 200 from whatever
    holds the port (another demo's hub, left running), and the caller would work with that
    one. A port in TIME_WAIT after a hub stopped is free (SO_REUSEADDR, as uvicorn binds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise RuntimeError(
                f"port {port} on {host} is taken ({exc.strerror}): another hub still running? "
                f"`ss -ltnp 'sport = :{port}'` names the process; stop it or choose another port"
            ) from None


def _wait_healthy(hub: HubProc, health_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if hub.process.poll() is not None:
            raise RuntimeError(
                f"hub on port {hub.port} exited ({hub.process.returncode}):\n{hub.log_tail(40)}"
            )
        try:
            if httpx.get(health_url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(
        f"hub on port {hub.port} did not answer in {timeout_s}s:\n{hub.log_tail(40)}"
    )


def _env_name(setting: str) -> str:
    name = setting.upper()
    return name if name.startswith("DISPATCH_") else f"DISPATCH_{name}"


def spawn_ledger(
    redis_url: str,
    data_dir: Path,
    *,
    log_path: Path | None = None,
    log_level: str = "warning",
    settings: Mapping[str, object] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``python -m server.ledger`` (the ledger writer in its own process) on the
    SQLite ledger of ``data_dir``; for hubs started with ``ledger_in_hub=0``. ``settings``
    become DISPATCH_<NAME> values."""
    env = dict(
        os.environ, REDIS_URL=redis_url, DISPATCH_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1"
    )
    env |= {f"DISPATCH_{name.upper()}": str(value) for name, value in (settings or {}).items()}
    out = log_path.open("ab") if log_path else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, *LEDGER_COMMAND, "--log-level", log_level],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # out of the terminal's process group: stopped by its owner
        preexec_fn=stop_with_parent,  # and never left behind by a killed owner
    )


@dataclass
class LocalCluster:
    """An embedded Redis (unless ``redis_url`` is given) and ``hubs_wanted`` hubs."""

    hubs_wanted: int = 1
    settings: dict[str, object] = field(default_factory=dict)
    data_dir: Path | None = None
    redis_url: str | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    hubs: list[HubProc] = field(default_factory=list)
    redis: EmbeddedRedis | None = None

    def __enter__(self) -> LocalCluster:
        self.data_dir = self.data_dir or Path(tempfile.mkdtemp(prefix="dispatch-"))
        if self.redis_url is None:
            self.redis = EmbeddedRedis(self.data_dir / "redis").start()
            self.redis_url = self.redis.url
        self.tokens = self.tokens or {role: secrets.token_urlsafe(18) for role in ROLES}
        try:
            for _ in range(self.hubs_wanted):
                self.start_hub()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for hub in self.hubs:
            if hub.process.poll() is None:
                hub.process.terminate()
        for hub in self.hubs:
            hub.stop()
        if self.redis is not None:
            self.redis.stop()

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def start_hub(self) -> HubProc:
        assert self.redis_url is not None and self.data_dir is not None
        hub = spawn_hub(self.redis_url, self.tokens, self.data_dir, self.settings)
        self.hubs.append(hub)
        return hub
