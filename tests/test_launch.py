"""The launcher (:mod:`server.launch`): a hub or a ledger writer it starts never outlives the
process that started it, even one killed without a chance to stop them (SIGKILL): the load
test's driver, the demo, a test run."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from server.launch import ROOT, spawn_hub
from tests.conftest import TOKENS

OWNER = """
import json, sys, time
from pathlib import Path
from server.launch import spawn_hub, spawn_ledger
url, tokens, data = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
hub = spawn_hub(url, tokens, data, {"drain_wait_s": 0, "drain_spread_s": 0},
                log_path=data / "hub.log")
ledger = spawn_ledger(url, data, log_path=data / "ledger.log")
print(hub.process.pid, ledger.pid, flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left for init to reap has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.system
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_hub_and_a_ledger_writer_stop_when_their_owner_is_killed(
    redis_url: str, tmp_path: Path
) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, redis_url, json.dumps(TOKENS), str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    children: list[int] = []
    try:
        assert owner.stdout is not None
        children = [int(pid) for pid in owner.stdout.readline().split()]
        assert len(children) == 2 and all(_running(pid) for pid in children)
        owner.send_signal(signal.SIGKILL)  # no finally, no atexit: only the kernel can tell
        owner.wait()
        deadline = time.monotonic() + 30
        while any(_running(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [pid for pid in children if _running(pid)]
        assert not left, f"outlived their owner: {left}"
        assert "draining" in (tmp_path / "hub.log").read_text()  # stopped as on SIGTERM
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        for pid in children:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_hub_is_not_started_on_a_port_already_taken(tmp_path: Path) -> None:
    """Another server holds the port and answers the health check (a demo's hub left
    running): say so and start nothing. The launcher once took that answer for its own
    hub's, which had exited on "address already in use", and the caller used the other."""

    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthy) as other:
        serving = threading.Thread(target=other.serve_forever, daemon=True)
        serving.start()
        port = other.server_address[1]
        try:
            with pytest.raises(RuntimeError, match=f"port {port} on 127.0.0.1 is taken"):
                spawn_hub("redis://127.0.0.1:1/0", TOKENS, tmp_path, port=port)
        finally:
            other.shutdown()
