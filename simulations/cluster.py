"""A local deployment for simulations and benchmarks: an embedded Redis and K hub processes.

Everything listens on 127.0.0.1 only. ``LocalCluster`` is a context manager: leaving it stops
the hubs (SIGTERM) and then Redis.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from server.embedded_redis import EmbeddedRedis, free_port

ROLES = ("admin", "calltaker", "center", "wall")


@dataclass
class HubProc:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/field"

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


@dataclass
class LocalCluster:
    hubs_wanted: int = 1
    settings: dict[str, object] = field(default_factory=dict)
    data_dir: Path | None = None
    redis_url: str | None = None  # an existing Redis instead of the embedded one
    quiet: bool = True
    tokens: dict[str, str] = field(default_factory=dict)
    hubs: list[HubProc] = field(default_factory=list)
    redis: EmbeddedRedis | None = None

    def __enter__(self) -> LocalCluster:
        self.data_dir = self.data_dir or Path(tempfile.mkdtemp(prefix="dispatch-"))
        if self.redis_url is None:
            self.redis = EmbeddedRedis(self.data_dir / "redis").start()
            self.redis_url = self.redis.url
        self.tokens = {role: secrets.token_urlsafe(18) for role in ROLES}
        try:
            for _ in range(self.hubs_wanted):
                self.hubs.append(self.start_hub())
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for hub in self.hubs:
            if hub.process.poll() is None:
                hub.process.terminate()
        for hub in self.hubs:
            try:
                hub.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                hub.process.kill()
        if self.redis is not None:
            self.redis.stop()

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def start_hub(self, timeout_s: float = 30.0) -> HubProc:
        port = free_port()
        env = dict(
            os.environ,
            REDIS_URL=self.redis_url or "",
            PYTHONUNBUFFERED="1",
            DISPATCH_TOKENS=",".join(f"{r}:{t}" for r, t in self.tokens.items()),
            DISPATCH_DATA_DIR=str(self.data_dir),
        )
        env.update({f"DISPATCH_{k.upper()}": str(v) for k, v in self.settings.items()})
        out = subprocess.DEVNULL if self.quiet else None
        process = subprocess.Popen(
            [sys.executable, "-m", "server", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=out,
            stderr=out,
        )
        hub = HubProc(port, process)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"hub on port {port} exited with {process.returncode}")
            try:
                if httpx.get(f"{hub.http}/api/v1/health", timeout=0.5).status_code == 200:
                    return hub
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"hub on port {port} did not start")
