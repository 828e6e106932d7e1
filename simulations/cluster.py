"""Hub processes on this machine, for tests, simulations and benchmarks.

:func:`spawn_hub` starts one ``python -m server`` and waits until it answers;
:class:`LocalCluster` is an embedded Redis plus K hubs, as a context manager that stops them
all (hubs first, then Redis). Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from server.embedded_redis import EmbeddedRedis, free_port

ROLES = ("admin", "calltaker", "center", "wall")


@dataclass
class HubProc:
    """One running hub process."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/field"

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


def spawn_hub(
    redis_url: str,
    tokens: Mapping[str, str],
    data_dir: Path,
    settings: Mapping[str, object] | None = None,
    *,
    log_path: Path | None = None,
    log_level: str = "warning",
    timeout_s: float = 30.0,
) -> HubProc:
    """Start ``python -m server`` on a free port and wait until its health check answers.

    ``settings`` become DISPATCH_<NAME> variables. Output goes to ``log_path`` (or nowhere).
    Raises RuntimeError, with the log, if it exits or does not answer in time.
    """
    port = free_port()
    env = dict(
        os.environ,
        REDIS_URL=redis_url,
        DISPATCH_TOKENS=tokens_env(tokens),
        DISPATCH_DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="1",
    )
    env.update({f"DISPATCH_{k.upper()}": str(v) for k, v in (settings or {}).items()})
    out = log_path.open("wb") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--port", str(port), "--log-level", log_level],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    hub = HubProc(port, process, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"hub on port {port} exited ({process.returncode}):\n{hub.log()}")
        try:
            if httpx.get(f"{hub.http}/api/v1/health", timeout=0.5).status_code == 200:
                return hub
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    hub.kill()
    raise RuntimeError(f"hub on port {port} did not answer in {timeout_s}s:\n{hub.log()}")


def spawn_ledger(
    redis_url: str, data_dir: Path, *, log_path: Path | None = None, log_level: str = "warning"
) -> subprocess.Popen[bytes]:
    """Start ``python -m server.ledger`` (the ledger writer in its own process) on the
    SQLite ledger of ``data_dir``; for hubs started with ``ledger_in_hub=0``."""
    env = dict(os.environ, REDIS_URL=redis_url, DISPATCH_DATA_DIR=str(data_dir),
               PYTHONUNBUFFERED="1")
    out = log_path.open("wb") if log_path else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "server.ledger", "--log-level", log_level],
        env=env, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True,  # out of the terminal's process group: stopped by its owner
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
