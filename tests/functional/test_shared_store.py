"""Freshness shared by the instances on one cache directory (through it, or through Redis), and
a mirror that outlives Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog
from aiohttp.test_utils import TestClient

from mirror.api.keys import META, UPKEEP
from mirror.app import create_app
from mirror.config import Settings, UpstreamSettings
from mirror.meta.redis import ACCESS_TTL, RedisStore
from tests.conftest import Seeded
from tests.support import storage
from tests.support.oci import ACCEPT_ALL, cached_blob, wait_until
from tests.support.processes import direct, free_port
from tests.support.redis_ha import ClusterNodes, SentinelSet
from tests.support.redis_server import RedisServer
from tests.support.registry import Registry

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, since tests here kill it."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def make_shared_mirror(
    aiohttp_client: ClientFactory, registry: Registry, cache_dir: Path
) -> Callable[..., Awaitable[TestClient[Any, Any]]]:
    """A mirror instance on the session registry that uses the given Redis (on the run's
    store)."""

    async def make(redis_url: str | None, *, tag_ttl: float = 300.0) -> TestClient[Any, Any]:
        settings = Settings(
            cache_dir=cache_dir,
            upstreams=(
                UpstreamSettings(
                    default=True, url=registry.url, connect_timeout=2.0, read_timeout=5.0
                ),
            ),
            tag_ttl=tag_ttl,
            redis_url=redis_url,
        )
        return await aiohttp_client(create_app(storage.current().applied(settings)))

    return make


def heads(registry: Registry, path: str) -> int:
    return sum(1 for method, seen in registry.requests() if method == "HEAD" and seen == path)


async def pull(client: TestClient[Any, Any], path: str) -> bytes:
    response = await client.get(path, headers={"Accept": ACCEPT_ALL})
    assert response.status == 200, await response.text()
    return await response.read()


@pytest.fixture(params=["directory", "redis", "sentinel", "cluster"])
def shared_through(request: pytest.FixtureRequest) -> str | None:
    """What instances on one cache directory share freshness through: the directory alone, or
    Redis as well (the Redis URL): one server, a master found through Sentinel, or a Cluster
    (the session's, emptied first, as each test here has a Redis of its own)."""
    if request.param == "directory":
        return None
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return server.url
    shared: SentinelSet | ClusterNodes = request.getfixturevalue(f"redis_{request.param}")
    shared.flush()
    return shared.url


async def test_a_tag_revalidated_by_one_instance_is_fresh_for_all(
    make_shared_mirror: Callable[..., Awaitable[TestClient[Any, Any]]],
    shared_through: str | None,
    registry: Registry,
    seeded: Seeded,
) -> None:
    """Two instances on one cache directory make one upstream HEAD per TTL in total, not one
    each, with Redis or without."""
    repo, tag = seeded.schema2_ref
    path = f"/v2/{repo}/manifests/{tag}"
    first = await make_shared_mirror(shared_through, tag_ttl=1.0)
    second = await make_shared_mirror(shared_through, tag_ttl=1.0)
    assert await pull(first, path) == seeded.schema2.manifest
    registry.clear_requests()
    assert await pull(second, path) == seeded.schema2.manifest
    assert registry.requests() == []  # fresh for the second as soon as the first fetched it
    await asyncio.sleep(1.3)  # the tag is now stale everywhere
    registry.clear_requests()
    for client in (first, second, first, second):
        assert await pull(client, path) == seeded.schema2.manifest
    assert heads(registry, path) == 1
    assert [r for r in registry.requests() if r[0] == "GET"] == []


async def test_concurrent_revalidation_across_instances_makes_one_head(
    make_shared_mirror: Callable[..., Awaitable[TestClient[Any, Any]]],
    shared_through: str | None,
    registry: Registry,
    seeded: Seeded,
) -> None:
    """When the tag goes stale under load, the revalidation lease lets only one instance ask."""
    repo, tag = seeded.oci_ref
    path = f"/v2/{repo}/manifests/{tag}"
    # Long enough that the tag, once revalidated, stays fresh while a loaded machine gets
    # through the burst: a second HEAD then could only come from a lease that did not hold.
    clients = [await make_shared_mirror(shared_through, tag_ttl=3.0) for _ in range(3)]
    await pull(clients[0], path)
    await asyncio.sleep(3.3)
    registry.clear_requests()
    bodies = await asyncio.gather(*(pull(c, path) for c in clients for _ in range(5)))
    assert set(bodies) == {seeded.oci.manifest}
    assert heads(registry, path) == 1


async def test_a_tag_is_fresh_before_its_revalidation_lease_is_released(
    make_shared_mirror: Callable[..., Awaitable[TestClient[Any, Any]]],
    shared_through: str | None,
    seeded: Seeded,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whoever takes the lease next finds the tag revalidated: were the lease released first,
    an instance taking it in between would find the tag still stale and ask again."""
    repo, tag = seeded.oci_ref
    path = f"/v2/{repo}/manifests/{tag}"
    client = await make_shared_mirror(shared_through, tag_ttl=1.0)
    await pull(client, path)
    await asyncio.sleep(1.3)  # stale now: the next pull revalidates under the lease
    meta = client.app[META]
    key = f"docker.io/{repo}:{tag}"
    at_release: list[str | None] = []
    release = type(meta).release_lease

    async def spying(store: Any, leased: str) -> None:
        if leased == key:
            at_release.append(await store.fresh_digest(leased))
        await release(store, leased)

    monkeypatch.setattr(type(meta), "release_lease", spying)
    assert await pull(client, path) == seeded.oci.manifest
    assert at_release == [seeded.oci.digest]


async def test_mirror_keeps_serving_through_a_redis_outage(
    make_shared_mirror: Callable[..., Awaitable[TestClient[Any, Any]]],
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    seeded: Seeded,
) -> None:
    """Killing Redis fails no request and warns once; when it returns it is used again."""
    repo, tag = seeded.schema2_ref
    path = f"/v2/{repo}/manifests/{tag}"
    blob = seeded.schema2.layers[0]
    client = await make_shared_mirror(redis_server.url, tag_ttl=0.2)
    await pull(client, path)
    redis_server.stop()
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            assert await pull(client, path) == seeded.schema2.manifest
            assert await pull(client, f"/v2/{repo}/blobs/{blob.digest}") == blob.data
            await asyncio.sleep(0.05)
    warnings = [e for e in logs if "redis unavailable" in str(e.get("event"))]
    assert len(warnings) == 1, warnings

    redis_server.start()  # back, and empty
    store = client.app[META]
    assert isinstance(store, RedisStore)
    for _ in range(100):  # the store probes Redis every second
        if store.available:
            break
        await asyncio.sleep(0.1)
    assert store.available
    await asyncio.sleep(0.3)  # past the front cache and the tag TTL
    assert await pull(client, path) == seeded.schema2.manifest
    fresh_keys = await redis_client.keys("mirror:fresh:*")
    assert any(tag.encode() in key for key in fresh_keys), fresh_keys


@pytest.mark.parametrize(
    "url", ["redis://{}/0", "redis+sentinel://{}/mymaster/0", "redis+cluster://{}"]
)
async def test_mirror_starts_and_serves_with_redis_down(
    make_shared_mirror: Callable[..., Awaitable[TestClient[Any, Any]]], seeded: Seeded, url: str
) -> None:
    """A Redis (one server, its sentinels or a Cluster) that is not there at start-up is a
    warning, not a failure."""
    repo, tag = seeded.schema2_ref
    client = await make_shared_mirror(url.format(f"127.0.0.1:{free_port()}"))
    assert await pull(client, f"/v2/{repo}/manifests/{tag}") == seeded.schema2.manifest


async def test_every_operation_answers_from_the_process_store_while_redis_is_down(
    redis_server: RedisServer,
) -> None:
    """Freshness, leases, flags and upstream facts all work on without Redis, warning once."""
    store = RedisStore(redis_server.url, prefix="down:", front_ttl=0.0)
    with structlog.testing.capture_logs() as logs:
        await store.start()
        redis_server.stop()
        await store.mark_fresh("hub/app:v1", "sha256:" + "a" * 64, 60)
        assert await store.fresh_digest("hub/app:v1") == "sha256:" + "a" * 64
        assert await store.try_lease("hub/app:v1", 10)
        assert not await store.try_lease("hub/app:v1", 10)
        await store.release_lease("hub/app:v1")
        assert await store.try_lease("hub/app:v1", 10)
        await store.set_flag("breaker:hub", 60)
        assert await store.has_flag("breaker:hub")
        await store.clear_flag("breaker:hub")
        assert not await store.has_flag("breaker:hub")
        await store.note_upstream("hub", {"ratelimit_remaining": "5"})
        await store.close()
    assert not store.available
    warnings = [e for e in logs if "redis unavailable" in str(e.get("event"))]
    assert len(warnings) == 1, logs


async def test_access_counts_reach_redis_in_batches(
    make_shared_mirror: Callable[..., Awaitable[TestClient[Any, Any]]],
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    seeded: Seeded,
    cache_dir: Path,
) -> None:
    """Hits on cached content are counted per digest with the last hit time, and expire."""
    repo, _ = seeded.oci_ref
    layer = seeded.oci.layers[0]
    client = await make_shared_mirror(redis_server.url)
    await pull(client, f"/v2/{repo}/blobs/{layer.digest}")  # a miss: not counted
    assert await wait_until(cached_blob(cache_dir, layer.digest).exists)
    for _ in range(3):
        await pull(client, f"/v2/{repo}/blobs/{layer.digest}")
    await client.app[UPKEEP].access.flush()
    key = f"mirror:access:{layer.digest}"
    stats = await redis_client.hgetall(key)
    assert int(stats[b"hits"]) == 3
    assert abs(float(stats[b"last"]) - time.time()) < 60
    assert 0 < await redis_client.ttl(key) <= ACCESS_TTL


async def test_content_that_does_not_exist_leaves_no_access_record(
    make_shared_mirror: Callable[..., Awaitable[TestClient[Any, Any]]],
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    seeded: Seeded,
) -> None:
    """Requests for digests that are nowhere record nothing, in Redis or in memory."""
    repo, _ = seeded.oci_ref
    client = await make_shared_mirror(redis_server.url)
    for n in range(20):
        missing = f"sha256:{n:064x}"
        response = await client.get(f"/v2/{repo}/blobs/{missing}")
        assert response.status == 404
        response = await client.get(f"/v2/{repo}/manifests/{missing}")
        assert response.status == 404
    await client.app[UPKEEP].access.flush()
    assert await redis_client.keys("mirror:access:*") == []


def _start_workers(
    tmp_path: Path, upstream: str, redis_url: str
) -> tuple[subprocess.Popen[bytes], int]:
    """`mirror serve --workers 2` through the CLI, once it answers: (process, port)."""
    port = free_port()
    command = [
        sys.executable, "-m", "mirror", "serve", "--workers", "2",
        "--listen", f"127.0.0.1:{port}", "--upstream", upstream,
        "--cache-dir", str(tmp_path / "cache"), "--redis-url", redis_url,
    ]  # fmt: skip
    with (tmp_path / "mirror.log").open("wb") as log:
        env = storage.current().environ(tmp_path / "cache")
        process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + 20
    while True:
        try:
            direct.open(f"http://127.0.0.1:{port}/v2/", timeout=2).close()
            return process, port
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise AssertionError((tmp_path / "mirror.log").read_text()) from None
            time.sleep(0.1)


def test_workers_share_one_port_and_stop_together(
    tmp_path: Path, registry: Registry, redis_server: RedisServer, seeded: Seeded
) -> None:
    """`mirror serve --workers 2` runs two processes on one port; SIGTERM stops them all."""
    process, port = _start_workers(tmp_path, registry.url, redis_server.url)
    repo, tag = seeded.schema2_ref
    try:
        children = _children(process.pid)
        assert len(children) == 2
        for _ in range(6):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL}
            )
            with direct.open(request, timeout=10) as response:
                assert response.read() == seeded.schema2.manifest
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    assert all(not _alive(pid) for pid in children)
    assert "Traceback" not in (tmp_path / "mirror.log").read_text()


def test_workers_do_not_outlive_a_killed_supervisor(
    tmp_path: Path, registry: Registry, redis_server: RedisServer
) -> None:
    """A supervisor killed outright (SIGKILL) takes its workers with it: no orphans."""
    process, _ = _start_workers(tmp_path, registry.url, redis_server.url)
    children = _children(process.pid)
    assert len(children) == 2
    process.kill()
    process.wait()
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [pid for pid in children if _alive(pid)]
    for pid in orphans:  # never leave them behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not orphans


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in tasks]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text()
