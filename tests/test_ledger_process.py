"""The ledger writer in its own process (``python -m server.ledger``) beside hubs that do
not record (``DISPATCH_LEDGER_IN_HUB=0``)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from server.launch import spawn_ledger
from tests.conftest import Hubs
from tests.helpers import XIGONG, Api, auth, eventually


async def _recorded(api: Api) -> list[str]:
    response = await api.http.get("/api/v1/ledger/requests", headers=auth("center"))
    return [row["id"] for row in response.json()]


async def test_the_ledger_process_records_what_hubs_without_a_writer_do(
    hubs: Hubs, redis_url: str
) -> None:
    hub = hubs.start(ledger_in_hub=0)
    api = Api(hub)
    created = await api.request(*XIGONG)
    await asyncio.sleep(1.5)  # a hub's own writer would have recorded it by now (0.5 s passes)
    assert await _recorded(api) == []
    writer = spawn_ledger(redis_url, hubs.tmp / "var", log_path=hubs.tmp / "ledger.log")
    try:

        async def recorded() -> bool:
            return created["id"] in await _recorded(api)

        await eventually(recorded)
        writer.terminate()  # SIGTERM: stops at once, cleanly
        assert writer.wait(timeout=10) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    await api.close()


def test_the_ledger_process_needs_the_hubs_redis() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "server.ledger"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": ""},
        check=False,
    )
    assert done.returncode == 2 and "REDIS_URL is required" in done.stderr


async def test_the_ledger_process_drops_closed_requests_live_state(
    hubs: Hubs, redis_url: str
) -> None:
    """With DISPATCH_LIVE_RETENTION_H, the writer process also sweeps: a cancelled request
    (recorded, its caller told) leaves Redis and is answered from the ledger."""
    hub = hubs.start(ledger_in_hub=0)
    api = Api(hub)
    writer = spawn_ledger(
        redis_url,
        hubs.tmp / "var",
        log_path=hubs.tmp / "ledger.log",
        settings={"live_retention_h": 0.0005},  # 1.8 s
    )
    try:
        created = await api.request(*XIGONG)
        cancel = await api.http.post(
            f"/api/v1/requests/{created['id']}/cancel",
            headers=auth("center"),
            json={"reason": "withdrawn", "note": "fixed itself"},
        )
        assert cancel.status_code == 200, cancel.text

        async def archived() -> bool:
            return bool((await api.get_request(created["id"])).get("archived"))

        await eventually(archived, timeout_s=30)
        detail = await api.get_request(created["id"])
        assert detail["state"] == "cancelled" and detail["timeline"][-1]["type"] == "cancelled"
    finally:
        writer.terminate()
        try:
            writer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            writer.kill()
            writer.wait()
    await api.close()
