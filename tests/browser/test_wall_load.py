"""The wall map with 10,000 squads, a tenth of them moving each second: all are drawn, the
moves arrive as deltas (not the whole map again), and the page keeps drawing frames. The frame rate
is printed, not asserted (it depends on the machine): docs/benchmarks.md has the measurement
(``python -m tools.wall_fps``)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_sync

from tests.browser.harness import LiveHub, start_live_hub
from tools.wall_fps import MEASURE_JS, Mover, district_rings, seed_squads

SQUADS = 10_000


@pytest.fixture(scope="module")
def live_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    hub = start_live_hub(tmp_path_factory.mktemp("wall-load-hub"))
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def moving_city(live_hub: LiveHub) -> Iterator[Mover]:
    client = redis_sync.Redis.from_url(live_hub.redis_url)
    units = [u["code"] for u in live_hub.api("GET", "/api/v1/units")]
    areas = district_rings(live_hub.url, live_hub.admin_headers)
    squads = seed_squads(client, units, SQUADS, random.Random(11), free=False, areas=areas)
    client.close()
    mover = Mover(live_hub.redis_url, squads, 0.1)
    mover.start()
    yield mover
    mover.halt.set()
    mover.join(5)


def test_ten_thousand_moving_squads(pages: Any, moving_city: Mover) -> None:
    page = pages.signed_in("wall", "/wall.html", lang="zh", size="wall")
    sizes: list[int] = []
    page.on(
        "websocket",
        lambda ws: ws.on("framereceived", lambda payload: sizes.append(len(payload))),
    )
    page.reload()  # the socket opens again, now watched
    page.wait_for_function("(n) => window.wallView.squads.count() === n", arg=SQUADS)
    result = page.evaluate(MEASURE_JS, 4)
    print(f"\nwall with {SQUADS} moving squads: {result}")
    assert result["squads_drawn"] == SQUADS
    assert result["redraws"] >= 2  # the squads moved on the page, not only in Redis
    # a delta carries the squads that moved (a tenth), not the whole map again
    snapshot, *deltas = sizes
    assert snapshot > SQUADS * 30 and deltas
    assert max(deltas) < snapshot / 4, (snapshot, deltas)
    pages.shot(page, "10000-squads")
