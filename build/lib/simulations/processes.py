"""Child processes of the demo: the embedded Redis and a ``python -m server`` hub.

Both are kept out of the terminal's Ctrl-C so that the demo decides the order of shutdown:
squads first, then the report (which still needs the hub and Redis), then the hub, then
Redis.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from server.embedded_redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]


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


def start_redis(data_dir: Path) -> EmbeddedRedis:
    with _sigint_blocked():
        return EmbeddedRedis(data_dir).start()


class HubProcess:
    """One hub process, its output in ``log_path``."""

    def __init__(self, host: str, port: int, env: Mapping[str, str], log_path: Path) -> None:
        self.host, self.port = host, port
        self.env = dict(env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> HubProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server", "--host", self.host, "--port", str(self.port),
                 "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # out of the terminal's process group: no Ctrl-C
            )
        return self

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (uvicorn shuts down gracefully), SIGKILL if it does not within the time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
