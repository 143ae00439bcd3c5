"""The metadata store and the fill leases on Redis as replicated sites run it: a Cluster, whose
keys live on several nodes, and a master behind Sentinel that fails over."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient

from mirror.api.keys import META
from mirror.app import create_app
from mirror.config import Settings, UpstreamSettings
from mirror.meta.redis import RedisStore
from mirror.oci.digest import Digest
from mirror.replicas.leases import FillLeases, is_kept, lease_value
from tests.conftest import Seeded
from tests.support import storage
from tests.support.oci import ACCEPT_ALL
from tests.support.redis_ha import ClusterNodes, SentinelSet
from tests.support.registry import Registry

# Generous: a bound on a hang, never a measure of speed.
WITHIN = 60.0


@pytest.fixture
async def cluster_store(redis_cluster: ClusterNodes) -> AsyncIterator[RedisStore]:
    """A store on the session's Cluster, under a prefix of this test's own."""
    store = RedisStore(redis_cluster.url, prefix=f"test-{uuid.uuid4().hex[:12]}:", front_ttl=0)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


def nodes_holding(cluster: ClusterNodes, pattern: str) -> int:
    """How many of the Cluster's nodes hold a key matching `pattern`."""
    holding = 0
    for node in cluster.nodes:
        with cluster.client(node) as server:
            holding += bool(server.keys(pattern))
    return holding


async def test_every_store_operation_works_on_a_cluster(
    cluster_store: RedisStore, redis_cluster: ClusterNodes
) -> None:
    """Freshness, leases, flags, upstream facts, and batched access counts and last uses all
    reach a Cluster, whose nodes each hold some of the keys, and the store never falls back."""
    digests = [f"sha256:{n:064x}" for n in range(30)]
    for n, digest in enumerate(digests):
        await cluster_store.mark_fresh(f"hub/app:v{n}", digest, 60)
    for n, digest in enumerate(digests):
        assert await cluster_store.fresh_digest(f"hub/app:v{n}") == digest
    assert await cluster_store.try_lease("hub/app:v1", 10)
    assert not await cluster_store.try_lease("hub/app:v1", 10)
    await cluster_store.release_lease("hub/app:v1")
    assert await cluster_store.try_lease("hub/app:v1", 10)
    await cluster_store.set_flag("breaker:hub", 60)
    assert await cluster_store.has_flag("breaker:hub")
    await cluster_store.clear_flag("breaker:hub")
    assert not await cluster_store.has_flag("breaker:hub")
    await cluster_store.note_upstream("hub", {"ratelimit_remaining": "5"})
    # One pipeline whose keys fall in many slots on every node.
    at = float(int(time.time()))
    await cluster_store.add_hits({digest: (2, at + n) for n, digest in enumerate(digests)})
    hits = await cluster_store.command(
        lambda redis: asyncio.gather(
            *(redis.hget(cluster_store.key(f"access:{d}"), "hits") for d in digests)
        )
    )
    assert hits == [b"2"] * len(digests)
    never = Digest.parse(f"sha256:{'f' * 64}")
    recorded = await cluster_store.last_used([*map(Digest.parse, digests), never])
    assert recorded == {Digest.parse(d): at + n for n, d in enumerate(digests)}
    assert cluster_store.available
    assert nodes_holding(redis_cluster, cluster_store.key("*")) == len(redis_cluster.nodes)


async def test_fill_leases_are_taken_renewed_kept_and_released_on_a_cluster(
    cluster_store: RedisStore, redis_cluster: ClusterNodes
) -> None:
    """Each lease script runs on the node that owns the blob's key: one holder at a time,
    renewed and released only by its holder, kept after a fill, taken over from a holder
    that is gone."""
    leases = FillLeases(cluster_store)
    blobs = [Digest.parse(f"sha256:{n:064x}") for n in range(12)]
    first, second = lease_value("http://a", "1"), lease_value("http://b", "2")
    for blob in blobs:
        assert await leases.take(blob, first) == first
        assert await leases.take(blob, second) == first
        assert not await leases.renew(blob, second)
        assert await leases.renew(blob, first)
        await leases.release(blob, second)  # not its lease: nothing happens
        assert await leases.take(blob, second) == first
        await leases.release(blob, first)
        assert await leases.take(blob, second) == second
        assert not await leases.take_over(blob, first, first)
        assert await leases.take_over(blob, second, first)
        await leases.keep(blob, first)
        assert is_kept(await leases.take(blob, second))
    assert cluster_store.available
    assert nodes_holding(redis_cluster, cluster_store.key("fill:*")) == len(redis_cluster.nodes)


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    """A master, replica and sentinel of this test's own, since the test fails the master over."""
    servers = SentinelSet(tmp_path / "sentinel-set")
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


async def test_a_sentinel_failover_keeps_the_mirror_serving_and_sharing(
    sentinel_set: SentinelSet,
    aiohttp_client: Any,
    registry: Registry,
    seeded: Seeded,
    tmp_path: Path,
) -> None:
    """With the master killed the mirror serves on from its in-process store; once the
    sentinel has promoted the replica, the mirror finds the new master and shares through it."""
    settings = Settings(
        cache_dir=tmp_path / "cache",
        upstreams=(UpstreamSettings(default=True, url=registry.url, read_timeout=5.0),),
        tag_ttl=0.2,
        redis_url=sentinel_set.url,
    )
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(storage.current().applied(settings))
    )
    repo, tag = seeded.schema2_ref
    path = f"/v2/{repo}/manifests/{tag}"

    async def pull() -> None:
        response = await client.get(path, headers={"Accept": ACCEPT_ALL})
        assert response.status == 200, await response.text()
        assert await response.read() == seeded.schema2.manifest

    def writes(port: int) -> int:
        """How many SETs the server at `port` has run (its keys expire with the tag TTL)."""
        with sentinel_set.client(port) as server:
            return int(server.info("commandstats").get("cmdstat_set", {}).get("calls", 0))

    await pull()
    replica = sentinel_set.replica.port
    assert writes(sentinel_set.master.port) > 0
    store = client.app[META]
    assert isinstance(store, RedisStore)

    sentinel_set.master.stop()
    with structlog.testing.capture_logs() as logs:
        deadline = time.monotonic() + WITHIN
        # Past the tag TTL each time, so each pull asks Redis, until the replica is master.
        while sentinel_set.master_port() != replica:
            assert time.monotonic() < deadline, "the sentinel promoted no replica"
            await pull()
            await asyncio.sleep(0.3)
    assert [e for e in logs if "redis unavailable" in str(e.get("event"))]

    while not store.available:  # the store probes Redis every second
        assert time.monotonic() < deadline, "the mirror did not use the new master"
        await asyncio.sleep(0.1)
    before = writes(replica)  # with its old master dead, only the mirror writes to it now
    await asyncio.sleep(0.3)  # past the front cache and the tag TTL
    await pull()
    assert writes(replica) > before


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
async def test_readiness_asks_the_redis_the_url_names(
    aiohttp_client: Any, request: pytest.FixtureRequest, topology: str, tmp_path: Path
) -> None:
    """`/readyz` reaches a master through its sentinel, and a Cluster through its nodes."""
    shared: SentinelSet | ClusterNodes = request.getfixturevalue(f"redis_{topology}")
    settings = Settings(cache_dir=tmp_path / "cache", redis_url=shared.url)
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(storage.current().applied(settings))
    )
    response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["checks"]["redis"] == "ok"
