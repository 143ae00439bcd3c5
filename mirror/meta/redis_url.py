"""Where Redis is, named by one URL: a single server, a master that Sentinel watches, or a Cluster.

- `redis://[[user]:password@]host:port/db`, `rediss://…`, `unix:///path?db=N`: one server, read
  by redis-py itself.
- `redis+sentinel://[[user]:password@]host:26379[,host:26379…]/service[/db]`: the master of
  `service`, found by asking the sentinels, and found again after a failover. The credentials
  are the master's; sentinels that want a password of their own get it from `?sentinel_password=`.
- `redis+cluster://[[user]:password@]host:7000[,host:7001…]`: a Redis Cluster; the nodes named
  are only where to start, the client learns the rest and follows slots that move.

Every key the mirror keeps is used alone (no command, script or transaction spans two keys;
pipelines are not transactions), so a Cluster may put each key in any slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.exceptions import RedisClusterException, RedisError

SINGLE_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
DEFAULT_PORTS = {SENTINEL_SCHEME: 26379, CLUSTER_SCHEME: 6379}

# What a Redis that is away raises: redis-py's own errors, a Cluster client's errors about its
# topology (not RedisErrors: "cannot be connected", a slot no node serves) and socket errors.
REDIS_FAILURES = (RedisError, RedisClusterException, OSError)

Client = aioredis.Redis | RedisCluster


@dataclass(frozen=True, slots=True)
class RedisUrl:
    """A `--redis-url`, checked once at start-up and then turned into clients."""

    url: str
    scheme: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    @classmethod
    def parse(cls, url: str) -> RedisUrl:
        """Read `url`; raises ValueError saying what is wrong with it."""
        scheme = url.partition("://")[0].lower()
        if scheme in SINGLE_SCHEMES:
            # redis-py's own reading (untyped there), so what it refuses fails here, at start.
            parse_url(url)  # type: ignore[no-untyped-call]
            return cls(url, scheme)
        if scheme not in DEFAULT_PORTS:
            raise ValueError(
                "not a Redis URL: use redis://, rediss://, unix://, redis+sentinel:// or "
                "redis+cluster://"
            )
        parts = urlsplit(url)
        userinfo, _, hosts = parts.netloc.rpartition("@")
        username, _, password = (unquote(part) for part in userinfo.partition(":"))
        nodes = tuple(_node(item, DEFAULT_PORTS[scheme]) for item in hosts.split(","))
        query = parse_qs(parts.query, keep_blank_values=True)
        path = [unquote(p) for p in parts.path.split("/") if p]
        if scheme == CLUSTER_SCHEME:
            if path or query:
                raise ValueError("a Cluster URL names its nodes only (a Cluster has no db 1..N)")
            return cls(url, scheme, nodes, username=username or None, password=password or None)
        if set(query) - {"sentinel_password"}:
            raise ValueError("the only parameter of a Sentinel URL is sentinel_password")
        if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ValueError("a Sentinel URL ends in /SERVICE or /SERVICE/DB, e.g. /mymaster/0")
        return cls(
            url,
            scheme,
            nodes,
            service=path[0],
            db=int(path[1]) if len(path) == 2 else 0,
            username=username or None,
            password=password or None,
            sentinel_password=query.get("sentinel_password", [None])[0],
        )

    def connect(self, *, timeout: float) -> RedisLink:
        """A client for this URL whose socket operations give up after `timeout` seconds.

        No connection is made yet: redis-py connects (and asks the sentinels or the Cluster's
        nodes where to go) on the first command. A failed command is tried once more, at once
        (a pooled connection the server dropped, a master that moved), and then reported: the
        caller falls back and probes rather than holding requests in redis-py's backoff, which
        by default retries ten times.
        """
        common: dict[str, Any] = {
            "retry": Retry(NoBackoff(), 1),
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "username": self.username,
            "password": self.password,
        }
        if self.scheme == CLUSTER_SCHEME:
            seeds = [ClusterNode(host, port) for host, port in self.nodes]
            return RedisLink(RedisCluster(startup_nodes=seeds, **common))
        if self.scheme == SENTINEL_SCHEME:
            sentinel = Sentinel(  # type: ignore[no-untyped-call]  # untyped in redis-py
                list(self.nodes),
                sentinel_kwargs={
                    "retry": Retry(NoBackoff(), 1),
                    "socket_timeout": timeout,
                    "socket_connect_timeout": timeout,
                    "password": self.sentinel_password,
                },
            )
            master = sentinel.master_for(self.service, db=self.db, **common)
            return RedisLink(master, sentinel)
        del common["username"], common["password"]  # in the URL, where redis-py reads them
        return RedisLink(aioredis.Redis.from_url(self.url, **common))


class RedisLink:
    """A client and what must be closed with it (a Sentinel's own connections)."""

    def __init__(self, client: Client, sentinel: Sentinel | None = None) -> None:
        self.client = client
        self._sentinel = sentinel

    async def aclose(self) -> None:
        await self.client.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()


def _node(item: str, default_port: int) -> tuple[str, int]:
    """`host[:port]` (an IPv6 address in brackets) as a (host, port) pair."""
    try:
        parts = urlsplit("//" + item)
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host:
        raise ValueError(f"{item!r} is not host:port")
    return host, port or default_port
