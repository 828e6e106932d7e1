"""Opening Redis: one function, :func:`open_client`, for every process that talks to Redis
(the hub, ``python -m server.ledger``, the load test and the tools), on a single Redis or on a
Redis Cluster.

Which one, from the configuration:

* ``REDIS_URL=redis+cluster://[[user]:password@]host:port[,host:port...]`` (``rediss+cluster``
  for TLS): the cluster whose nodes are listed (any reachable one is enough: the client
  discovers the others with ``CLUSTER SLOTS``, and again after a failover);
* ``REDIS_URL=redis://...`` with ``DISPATCH_REDIS_CLUSTER=1``: the same, that node the first;
* otherwise a single Redis through :func:`server.store.pool.open_redis` (unchanged: the hot
  path's lean pool).

On a cluster the client is redis-py's :class:`redis.asyncio.cluster.RedisCluster` with the same
hiredis command packing and round-trip counting as the single path. Every multi-key step names
keys of one unit only (one hash tag, one slot: see :mod:`server.store.keys`), so scripts and
transactions run as they are; pipelines may name keys of several units, and redis-py splits
them per node (one round trip per node, in parallel). Differences the callers handle:

* no blocking read over several units' streams (``XREAD`` of keys in several slots is
  refused): :mod:`server.feed.broker` polls them in a pipeline instead;
* pushes between processes on sharded pub/sub where Redis has it (7), plain pub/sub on 6.2
  (:mod:`server.broker`);
* redis-py's cluster client fails a command at once when a node's ``max_connections`` are all
  busy, where the single path waits in line: :class:`BoundedCluster` lets at most
  ``IN_FLIGHT_PER_CONNECTION * redis_connections`` commands or pipelines be in flight per
  process, the others wait. Not ``redis_connections`` alone: an operation stays in flight
  longer on the cluster client (a task per node of a pipeline, its replies gathered), and
  with 64 one hub at 100 requests/s queued for seconds (intake -> offer p50 52 ms, p95
  1.6 s) at 35 % of a core; with 256: p50 10 ms, p95 82 ms (docs/benchmarks.md, "Redis
  Cluster").

``WAIT`` (``DISPATCH_REDIS_WAIT_REPLICAS``): Redis replicates asynchronously, so a write a
master acknowledged can be lost if it dies before its replica has it (see docs/benchmarks.md,
"Redis Cluster (issue 12)"). :func:`queue_wait` adds ``WAIT n timeout`` behind a step in the
same pipeline, sent on the same connection as the step, to the node that holds the step's keys.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from server.settings import Settings, SettingsError
from server.store.pool import lean_connection, open_redis
from server.store.round_trips import RoundTrips

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme -> TLS
# A failover takes cluster-node-timeout plus an election (a few seconds on defaults): a
# command keeps retrying, with the topology refreshed, for about that long.
CLUSTER_RETRY = (ExponentialBackoff(cap=1.0, base=0.05), 12)  # ~8 s
IN_FLIGHT_PER_CONNECTION = 4  # see the module's docstring
MAX_NODE_CONNECTIONS_MARGIN = 16  # transactions with WATCH hold theirs outside the bound


@dataclass(frozen=True)
class ClusterAddress:
    nodes: list[tuple[str, int]]
    username: str | None
    password: str | None
    tls: bool


def wants_cluster(url: str, settings: Settings) -> bool:
    """Whether ``url`` (with ``settings``) names a Redis Cluster."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES or settings.redis_cluster


def check_redis_url(settings: Settings) -> None:
    """Raise SettingsError (one line, before the server starts) if ``REDIS_URL`` names a
    cluster its nodes cannot be read from."""
    url = settings.redis_url
    if url and wants_cluster(url, settings):
        try:
            parse_cluster_url(url)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None


def parse_cluster_url(url: str) -> ClusterAddress:
    """The nodes and credentials of ``redis+cluster://[user:password@]host:port,host:port``
    (or of a plain ``redis://`` / ``rediss://`` URL: one node). A database other than 0 is
    refused (a cluster has only database 0)."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in {*CLUSTER_SCHEMES, "redis", "rediss"}:
        raise ValueError("REDIS_URL: a cluster URL is redis+cluster://host:port,host:port")
    tls = CLUSTER_SCHEMES.get(scheme, scheme == "rediss")
    netloc, _, path = rest.partition("/")
    path = path.partition("?")[0]
    if path not in ("", "0"):
        raise ValueError("REDIS_URL: a Redis Cluster has only database 0")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError("REDIS_URL: each cluster node is host:port")
        nodes.append((host.strip("[]"), int(port)))
    return ClusterAddress(nodes, username, password, tls)


def open_client(url: str, settings: Settings | None = None) -> tuple[Redis, RoundTrips]:
    """The process's Redis client on ``url`` and the counter of its round trips: a cluster
    client when :func:`wants_cluster`, else :func:`server.store.pool.open_redis`. Typed as
    :class:`Redis`: the cluster client answers the same commands (``isinstance(client,
    RedisCluster)`` tells them apart where it matters). The caller closes it (``aclose``)."""
    settings = settings or Settings()
    if not wants_cluster(url, settings):
        return open_redis(url, settings)
    return open_cluster(url, settings)


def open_cluster(url: str, settings: Settings) -> tuple[Redis, RoundTrips]:
    address = parse_cluster_url(url)
    counter = RoundTrips()
    bound = IN_FLIGHT_PER_CONNECTION * settings.redis_connections
    client = BoundedCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in address.nodes],
        username=address.username,
        password=address.password,
        ssl=address.tls,
        max_connections=bound + MAX_NODE_CONNECTIONS_MARGIN,
        retry=Retry(*CLUSTER_RETRY),
        require_full_coverage=False,  # the other slots keep working while one fails over
        health_check_interval=0,
        bound=bound,
    )
    connection_class = lean_connection(
        _counting(SSLConnection if address.tls else Connection, counter)
    )
    # redis-py takes no connection class for a cluster: its nodes read it from these kwargs
    # (shared with its NodesManager) when they are created, and the startup nodes from here.
    client.connection_kwargs["connection_class"] = connection_class
    for node in client.startup_nodes:
        node.connection_class = connection_class
    return cast(Redis, client), counter


def is_cluster(redis: Any) -> bool:
    return isinstance(redis, RedisCluster)


async def sharded_pubsub(redis: Any) -> bool:
    """Whether ``redis`` is a cluster whose servers have shard channels (Redis >= 7)."""
    if not is_cluster(redis):
        return False
    info = await redis.info("server")
    return int(str(info["redis_version"]).split(".")[0]) >= 7


def _counting(base: Any, counter: RoundTrips) -> Any:
    class Counting(base):  # type: ignore[misc, valid-type]
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            counter.count += 1
            await super().send_packed_command(command, check_health)

    Counting.__name__ = f"Counting{base.__name__}"
    return Counting


class BoundedCluster(RedisCluster):
    """A :class:`RedisCluster` with at most ``bound`` commands or pipelines in flight: the
    others wait in line instead of failing with ``MaxConnectionsError``."""

    def __init__(self, *args: Any, bound: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_flight = asyncio.Semaphore(bound)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self._in_flight:
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused by redis-py
        return _BoundedPipeline(self, transaction)  # type: ignore[abstract]  # redis-py stubs


class _BoundedPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        client = cast(BoundedCluster, self.cluster_client)
        async with client._in_flight:
            return await super().execute(raise_on_error, allow_redirections)


def queue_wait(pipe: Any, redis: Any, key: str, replicas: int, timeout_ms: int) -> None:
    """Queue ``WAIT replicas timeout_ms`` in ``pipe`` behind the writes to ``key``'s node: on a
    cluster, sent to that node with them (one connection per node in a pipeline); on a single
    Redis, on the pipeline's connection. Its answer (replicas reached) is the pipeline's last."""
    if is_cluster(redis):
        node = redis.get_node_from_key(key)
        pipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)
    else:
        pipe.execute_command("WAIT", replicas, timeout_ms)
