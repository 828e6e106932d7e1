"""The hub on a Redis Cluster (issue 12): the configuration that names one, and a master
killed under load (its replica takes over, the hubs carry on, and a request answered after
``WAIT 1`` survives). The hub's other Redis tests run on the cluster too: the
``redis6.2-cluster`` parameter of ``redis_base_url`` (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dispatch_field import protocol
from server.broker import Broker
from server.hub import Hub
from server.settings import Settings
from server.store import keys
from server.store.availability import RedisAvailability
from server.store.cluster import (
    IN_FLIGHT_PER_CONNECTION,
    open_client,
    parse_cluster_url,
    sharded_pubsub,
    wants_cluster,
)
from server.store.embedded_cluster import EmbeddedCluster
from tests.conftest import Hubs
from tests.helpers import XIGONG, Api, auth, eventually, online_squad


def test_a_cluster_is_named_by_its_url_or_by_the_setting() -> None:
    address = parse_cluster_url("redis+cluster://:s%40cret@10.0.0.1:7000,10.0.0.2:7001")
    assert address.nodes == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert address.password == "s@cret" and address.username is None and not address.tls
    assert parse_cluster_url("rediss+cluster://u:p@h:1").tls
    assert wants_cluster("redis+cluster://h:1", Settings())
    assert not wants_cluster("redis://h:1/0", Settings())
    assert wants_cluster("redis://h:1/0", Settings(redis_cluster=True))
    for bad in ("redis+cluster://h:1/3", "redis+cluster://h", "http://h:1"):
        with pytest.raises(ValueError):
            parse_cluster_url(bad)


@pytest.mark.parametrize(
    ("command", "url", "reason"),
    [
        ("server", "redis+cluster://10.0.0.1", "each cluster node is host:port"),
        ("server.ledger", "redis+cluster://h:7000/3", "a Redis Cluster has only database 0"),
    ],
)
def test_a_malformed_cluster_url_stops_the_command_with_one_line(
    command: str, url: str, reason: str
) -> None:
    """The hub's command and the ledger process's (they share server.cli.start)."""
    done = subprocess.run(
        [sys.executable, "-m", command],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": url},
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: REDIS_URL: {reason}"]


async def test_the_cluster_client_bounds_what_is_in_flight_and_counts_round_trips(
    embedded_cluster: EmbeddedCluster,
) -> None:
    embedded_cluster.flush()
    client, trips = open_client(embedded_cluster.url, Settings(redis_connections=1))
    try:
        counters = [keys.stats(f"u{i}") for i in range(9)]  # nine units: every master
        await asyncio.gather(*(client.hincrby(counters[i % 9], "n", 1) for i in range(300)))
        pipe = client.pipeline(transaction=False)
        for key in counters:
            pipe.hget(key, "n")
        assert sum(int(n) for n in await pipe.execute()) == 300
        assert trips.count >= 300
        connections = [len(node._connections) for node in client.get_nodes()]  # type: ignore[attr-defined]
        assert max(connections) <= IN_FLIGHT_PER_CONNECTION, connections  # 300 waited in line
        assert type(client).__name__ == "BoundedCluster"
    finally:
        await client.aclose()


@pytest.fixture
def cluster(tmp_path: Path) -> EmbeddedCluster:
    """A cluster of its own (a master is killed): three masters, one replica each, a node
    timeout of one second."""
    server = EmbeddedCluster(tmp_path / "cluster", node_timeout_ms=1000).start()
    yield server  # type: ignore[misc]
    server.stop()


@pytest.mark.system
async def test_a_master_killed_under_load_fails_over_and_the_hubs_carry_on(
    cluster: EmbeddedCluster, tmp_path: Path
) -> None:
    hubs = Hubs(cluster.url, tmp_path)
    try:
        # Intake on one process (answered once a replica has the request), squads on the
        # other: every offer crosses processes on the pub/sub channel.
        desk = hubs.start(redis_wait_replicas=1, redis_wait_timeout_ms=2000)
        field = hubs.start()
        intake, squads_api = Api(desk), Api(field)
        squads = [
            await online_squad(
                squads_api, field, XIGONG[0] + 0.001 * i, XIGONG[1], name=f"w{i}", capacity=20
            )
            for i in range(3)
        ]
        answered: list[str] = []
        failed: list[int] = []
        stop = asyncio.Event()

        async def take_calls() -> None:
            while not stop.is_set():
                try:
                    response = await intake.http.post(
                        "/api/v1/requests",
                        headers=auth("calltaker"),
                        json={
                            "caller_phone": "13800000000",
                            "category": "water_main_burst",
                            "description": "pipe burst",
                            "lat": XIGONG[0],
                            "lon": XIGONG[1],
                        },
                    )
                except Exception:  # noqa: BLE001 - a timeout while failing over: counted
                    failed.append(0)
                    continue
                if response.status_code == 201:
                    answered.append(response.json()["id"])
                else:
                    failed.append(response.status_code)
                await asyncio.sleep(0.05)

        async def send_positions() -> None:
            step = 0
            while not stop.is_set():
                step += 1
                for i, squad in enumerate(squads):
                    with contextlib.suppress(Exception):
                        await squad.pos(XIGONG[0] + 0.001 * i, XIGONG[1] + 0.0001 * (step % 50))
                await asyncio.sleep(0.2)

        load = [asyncio.create_task(take_calls()), asyncio.create_task(send_positions())]
        await eventually(lambda: _at_least(answered, 10))
        victim = cluster.master_of(keys.events("water"))
        before = len(answered)
        victim.stop(kill=True)
        # The replica takes the slots over; the hubs keep taking calls (answered once WAIT
        # times out while the new master has no replica: the old one, started again,
        # rejoins as its replica).
        await eventually(lambda: _failed_over(cluster, victim.port), timeout_s=20)
        await asyncio.to_thread(cluster.restart, victim)
        await asyncio.to_thread(cluster.wait_healthy)
        await eventually(lambda: _at_least(answered, before + 20), timeout_s=30)
        stop.set()
        await asyncio.gather(*load)
        assert cluster.roles()[victim.port] == "slave"

        # After the failover: a new call is offered, across processes, to a squad.
        created = await intake.request(*XIGONG)
        assert created["squad"], created
        holder = next(s for s in squads if s.squad == created["squad"])
        await eventually(lambda: _offered(holder, created["id"]), timeout_s=10)
        # Every request answered (after WAIT 1) is still there: none was lost.
        for request_id in answered:
            response = await intake.http.get(
                f"/api/v1/requests/{request_id}", headers=auth("center")
            )
            assert response.status_code == 200, (request_id, response.text)
        assert len(failed) < len(answered), failed
        for squad in squads:
            await squad.close()
        await intake.close()
        await squads_api.close()
    finally:
        for hub in hubs.started:
            hub.stop()


async def _failed_over(cluster: EmbeddedCluster, old_port: int) -> bool:
    try:
        master = await asyncio.to_thread(cluster.master_of, keys.events("water"))
    except Exception:  # noqa: BLE001 - the slot has no master for a moment
        return False
    return master.port != old_port


async def _at_least(items: list[str], count: int) -> bool:
    return len(items) >= count


async def _offered(squad: object, request_id: str) -> bool:
    try:
        offer = await squad.next_frame(protocol.Offer, timeout_s=0.5)  # type: ignore[attr-defined]
    except (TimeoutError, AssertionError):
        return False
    return bool(offer.request.id == request_id)


SYSTEM_REDIS_SERVER = Path("/usr/bin/redis-server")


def _system_major() -> int:
    if not SYSTEM_REDIS_SERVER.exists():
        return 0
    out = subprocess.run(
        [str(SYSTEM_REDIS_SERVER), "--version"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"v=(\d+)\.", out)
    return int(match.group(1)) if match else 0


@pytest.mark.parametrize("binary", ["redis6.2-packaged", "redis7-system"])
async def test_pushes_reach_the_holding_process_on_the_cluster(
    binary: str, tmp_path: Path, embedded_cluster: EmbeddedCluster
) -> None:
    """A push published by one process reaches the subscription of the process that holds
    the squad: plain pub/sub on 6.2, shard channels (SSUBSCRIBE / SPUBLISH) on Redis 7."""
    if binary == "redis7-system":
        if _system_major() < 7:
            pytest.skip("no Redis 7 redis-server at /usr/bin")
        cluster = EmbeddedCluster(tmp_path / "c7", binary=str(SYSTEM_REDIS_SERVER)).start()
    else:
        cluster = embedded_cluster
    sender_client, _ = open_client(cluster.url, Settings())
    holder_client, _ = open_client(cluster.url, Settings())
    received: asyncio.Queue[tuple[str, int, bytes]] = asyncio.Queue()

    class Holder(Hub):
        def deliver(self, squad: str, seq: int, body: bytes) -> None:  # type: ignore[override]
            received.put_nowait((squad, seq, body))

    holder = Holder()
    listening = Broker(holder_client, holder, RedisAvailability())
    sender = Broker(sender_client, Hub(), RedisAvailability())
    task = asyncio.create_task(listening.listen())
    try:
        assert await sharded_pubsub(sender_client) is (binary == "redis7-system")

        async def pushed() -> bool:
            await sender.push("water", "S1", 7, b'{"t":"offer"}', holder.id)
            try:
                return await asyncio.wait_for(received.get(), 0.3) == ("S1", 7, b'{"t":"offer"}')
            except TimeoutError:
                return False

        await eventually(pushed)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sender_client.aclose()
        await holder_client.aclose()
        if cluster is not embedded_cluster:
            cluster.stop()
