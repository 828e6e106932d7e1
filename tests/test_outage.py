"""A Redis outage: killed with SIGKILL and started again while phones reconnect.

The hub must close no phone with an internal error (a phone that says hello while Redis is
away is told 1013, try again later, and resumes once Redis is back), lose nothing it
acknowledged, and log the outage once when it starts and once when it ends, not a traceback
per loop turn.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dispatch_field.codes import TRY_AGAIN_LATER, CloseCode
from server.store.embedded import EmbeddedRedis
from tests.conftest import Hubs
from tests.helpers import XIGONG, Api, eventually, online_squad


@pytest.mark.system
async def test_redis_kill_9_while_phones_reconnect(tmp_path: Path) -> None:
    redis_dir = tmp_path / "redis"
    redis = EmbeddedRedis(redis_dir).start()  # its own Redis: this test kills it
    hubs = Hubs(redis.url, tmp_path)
    try:
        hub = hubs.start(timer_poll_ms=50)
        api = Api(hub)
        phones = [
            await online_squad(api, hub, XIGONG[0] + i * 0.002, XIGONG[1], name=f"s{i}")
            for i in range(12)
        ]
        for phone in phones:
            phone.reconnect = True
            phone.backoff_s = (0.2, 1.0)
        created = [await api.request(*XIGONG) for _ in range(3)]

        await asyncio.to_thread(redis.stop, kill=True)
        for phone in phones:  # every phone says hello again while Redis is away
            await phone.drop()
        await asyncio.sleep(5.0)  # longer than the hub's retries of one command (about 2 s)
        redis = await asyncio.to_thread(EmbeddedRedis(redis_dir, port=redis.port).start)

        async def all_back() -> bool:
            return all(p.connected and p.welcomes >= 2 for p in phones)

        await eventually(all_back, timeout_s=30)
        codes = [code for phone in phones for code in phone.close_codes]
        assert CloseCode.INTERNAL_ERROR not in codes, codes
        assert TRY_AGAIN_LATER in codes, codes  # hellos during the outage were told to wait
        for request in created:  # the AOF kept every acknowledged request
            detail = await api.get_request(request["id"])
            assert detail["timeline"][0]["type"] == "received"

        async def seen_online() -> bool:
            states = await asyncio.gather(*(api.get_squad(p.squad) for p in phones))
            return all(s["online"] for s in states)

        await eventually(seen_online, timeout_s=15)

        # The end of the outage is logged by the first background loop to reach Redis again;
        # a loop may still be in its backoff (up to 0.8 s) when the phones are all back.
        async def end_logged() -> bool:
            return "Redis reachable again after" in hub.log()

        await eventually(end_logged, timeout_s=10)
        log = hub.log()
        assert "Traceback" not in log, log[-3000:]
        assert 1 <= log.count("Redis unreachable") <= 3, log[-3000:]
        for phone in phones:
            await phone.close()
        await api.close()
    finally:
        for started in hubs.started:
            started.stop()
        redis.stop()
