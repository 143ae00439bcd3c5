"""Replicas that share no disk but one Redis act as one cache: each blob miss is fetched from the
upstream once, the others stream it from the replica that fetches it, and one that dies mid-way
is taken over with a `Range` request."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
import redis.asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mirror.app import create_app
from mirror.config import Settings, UpstreamSettings
from mirror.replicas.leases import lease_value
from mirror.replicas.peers import SECRET_HEADER
from tests.conftest import Seeded
from tests.faults import FakeUpstream, Stall, stalled_resumable
from tests.support import storage
from tests.support.images import (
    Blob,
    make_image,
    make_index,
    push_image,
    push_index,
    sha256_digest,
)
from tests.support.mirror_process import MirrorProcess, start_mirror
from tests.support.oci import (
    ACCEPT_ALL,
    assert_broken,
    assert_oci_error,
    cached_blob,
    wait_until,
)
from tests.support.processes import free_port
from tests.support.redis_ha import ClusterNodes
from tests.support.redis_server import RedisServer
from tests.support.registry import Registry
from tests.support.seaweed import Seaweed

SECRET = "replicas-share-this-secret"
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
# Generous: a bound on a hang, never a measure of speed.
WITHIN = 60.0


class ReplicaFactory(Protocol):
    def __call__(
        self, count: int, upstream: str, secret: str = SECRET, settings: str = ""
    ) -> list[MirrorProcess]: ...


@pytest.fixture
def replicas_redis(request: pytest.FixtureRequest) -> str:
    """The URL of the Redis replicas share: the session's server, or (parametrized
    indirectly with "cluster") the session's Cluster."""
    if getattr(request, "param", "server") == "cluster":
        cluster: ClusterNodes = request.getfixturevalue("redis_cluster")
        return cluster.url
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
def start_replicas(tmp_path: Path, replicas_redis: str) -> Iterator[ReplicaFactory]:
    """Start `mirror serve` processes, each with a cache directory of its own, sharing the
    session's Redis (under a prefix of this test's own) and, unless told otherwise, the peer
    secret."""
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    started: list[MirrorProcess] = []

    def start(
        count: int, upstream: str, secret: str = SECRET, settings: str = ""
    ) -> list[MirrorProcess]:
        """`settings`: more lines of the settings file."""
        made = []
        for _ in range(count):
            workdir = tmp_path / f"replica-{len(started)}"
            workdir.mkdir()
            config = workdir / "mirror.toml"
            config.write_text(f'redis_prefix = "{prefix}"\npeer_secret = "{secret}"\n{settings}')
            port = free_port()
            flags = ("--config", str(config), "--redis-url", replicas_redis)
            peer = ("--peer-url", f"http://127.0.0.1:{port}")
            started.append(start_mirror(workdir, upstream, *flags, *peer, port=port))
            made.append(started[-1])
        return made

    try:
        yield start
    finally:
        for replica in started:
            replica.stop()


def url(replica: MirrorProcess, path: str) -> str:
    return f"http://127.0.0.1:{replica.port}{path}"


def upstream_gets(registry: Registry, path: str) -> int:
    return sum(1 for method, seen in registry.requests() if method == "GET" and seen == path)


def cold_layer(registry: Registry, size: int) -> tuple[Blob, str]:
    """A one-layer image of its own pushed to the upstream: its layer and the layer's path."""
    image = make_image(layer_sizes=(size,), seed=uuid.uuid4().hex)
    repo = f"replicas/{uuid.uuid4().hex[:8]}"
    push_image(registry.url, repo, "v1", image)
    layer = image.layers[0]
    return layer, f"/v2/{repo}/blobs/{layer.digest}"


async def pull_spread(
    session: aiohttp.ClientSession, replicas: list[MirrorProcess], path: str, clients: int = 30
) -> list[bytes]:
    """`clients` concurrent pulls of `path`, spread over the replicas in turn."""
    pulls = (pull(session, url(replicas[i % len(replicas)], path)) for i in range(clients))
    return await asyncio.wait_for(asyncio.gather(*pulls), WITHIN)


async def pull(session: aiohttp.ClientSession, target: str) -> bytes:
    async with session.get(target) as response:
        assert response.status == 200, await response.text()
        return await response.read()


@pytest.mark.parametrize("replicas_redis", ["server", "cluster"], indirect=True)
async def test_thirty_clients_on_three_replicas_get_a_cold_blob_the_upstream_sent_once(
    start_replicas: ReplicaFactory, registry: Registry
) -> None:
    """30 concurrent clients spread over 3 replicas with separate caches pull one cold layer:
    every body is the blob, and the upstream sent its bytes exactly once, with the fill lease
    on one Redis server or on a Cluster. Each replica says at start-up where the others reach
    it."""
    layer, path = cold_layer(registry, 4 << 20)
    replicas = start_replicas(3, registry.url)
    registry.clear_requests()

    async with aiohttp.ClientSession() as session:
        bodies = await pull_spread(session, replicas, path)

    assert all(sha256_digest(body) == layer.digest for body in bodies)
    assert upstream_gets(registry, path) == 1
    assert registry.body_bytes(path) == layer.size
    starting = next(e for e in replicas[0].entries() if e.get("event") == "starting")
    assert starting["peer_url"] == url(replicas[0], "")


async def test_replicas_on_one_bucket_fetch_a_cold_blob_once_for_all(
    start_replicas: ReplicaFactory, registry: Registry, seaweed: Seaweed
) -> None:
    """The Kubernetes example's set-up (replicas with their own directories, one Redis, one
    bucket): 30 clients of a cold layer over 3 replicas get verified bodies from one upstream
    GET, the blob is uploaded to the bucket once, by one replica, and a new replica with an
    empty directory serves it without asking the upstream."""
    layer, path = cold_layer(registry, 2 << 20)
    bucket = seaweed.settings()
    storage = (
        "[storage]\n"
        f'url = "s3://{bucket.bucket}/{bucket.prefix}"\n'
        f'endpoint = "{bucket.endpoint}"\n'
        f'region = "{bucket.region}"\n'
        f'access_key_id = "{bucket.access_key_id}"\n'
        f'secret_access_key = "{bucket.secret_access_key}"\n'
    )
    replicas = start_replicas(3, registry.url, settings=storage)
    registry.clear_requests()
    async with aiohttp.ClientSession() as session:
        bodies = await pull_spread(session, replicas, path)
        assert all(sha256_digest(body) == layer.digest for body in bodies)
        assert upstream_gets(registry, path) == 1
        key = f"blobs/sha256/{layer.digest.removeprefix('sha256:')}"

        def uploaded() -> bool:
            """In the bucket, and no upload left."""
            keys = seaweed.keys(bucket.prefix)
            return key in keys and not any(k.startswith("uploads/") for k in keys)

        assert await wait_until(uploaded, within=WITHIN)
        assert seaweed.keys(bucket.prefix)[key] == layer.size
        # The other replicas committed it as the first did: a second upload would show by now.
        await asyncio.sleep(1)
        uploads = [
            entry
            for replica in replicas
            for entry in replica.entries()
            if entry.get("event") == "uploaded a blob to the object store"
        ]
        assert [entry["digest"] for entry in uploads] == [layer.digest]
        (fresh,) = start_replicas(1, registry.url, settings=storage)
        registry.clear_requests()
        assert sha256_digest(await pull(session, url(fresh, path))) == layer.digest
    assert upstream_gets(registry, path) == 0


async def test_thirty_clients_on_three_replicas_cost_the_upstream_one_get_per_manifest(
    start_replicas: ReplicaFactory, registry: Registry
) -> None:
    """30 concurrent clients spread over 3 replicas pull a cold multi-platform tag, then each
    platform's manifest by digest: every body is the manifest asked for, and the upstream sent
    each manifest once (the pull limit Docker Hub keeps counts manifest GETs). A replica asked
    later reads them from the replica that stored them."""
    images = [make_image(arch=arch, seed=uuid.uuid4().hex) for arch in ("amd64", "arm64")]
    index = make_index(images)
    repo = f"replicas/{uuid.uuid4().hex[:8]}"
    push_index(registry.url, repo, "v1", index)
    replicas = start_replicas(3, registry.url)
    registry.clear_requests()

    async def pull_manifests(target: MirrorProcess) -> None:
        headers = {"Accept": ACCEPT_ALL}
        async with aiohttp.ClientSession(headers=headers) as session:
            listed = await pull(session, url(target, f"/v2/{repo}/manifests/v1"))
            assert sha256_digest(listed) == index.digest
            for image in images:
                body = await pull(session, url(target, f"/v2/{repo}/manifests/{image.digest}"))
                assert sha256_digest(body) == image.digest

    pulls = (pull_manifests(replicas[i % 3]) for i in range(30))
    await asyncio.wait_for(asyncio.gather(*pulls), WITHIN)
    paths = [f"/v2/{repo}/manifests/v1", *(f"/v2/{repo}/manifests/{i.digest}" for i in images)]
    assert [upstream_gets(registry, path) for path in paths] == [1, 1, 1]
    (later,) = start_replicas(1, registry.url)
    registry.clear_requests()
    await asyncio.wait_for(pull_manifests(later), WITHIN)
    assert [upstream_gets(registry, path) for path in paths] == [0, 0, 0]


@pytest.mark.directory_only(
    reason="it loses a replica's copy by unlinking the file: with a bucket behind the directory "
    "nothing is lost (test_replicas_on_one_bucket_fetch_a_cold_blob_once_for_all is the bucket's)"
)
async def test_a_replica_asked_later_reads_a_blob_from_the_one_that_stored_it(
    start_replicas: ReplicaFactory, registry: Registry
) -> None:
    """A replica asked for a blob another one stored earlier gets it from that one, not from
    the upstream; when that one has lost it (evicted) or is gone, from the upstream again."""
    layer, path = cold_layer(registry, 300_000)
    first, second, third = start_replicas(3, registry.url)
    registry.clear_requests()

    async with aiohttp.ClientSession() as session:
        assert sha256_digest(await pull(session, url(first, path))) == layer.digest
        assert sha256_digest(await pull(session, url(second, path))) == layer.digest
        assert upstream_gets(registry, path) == 1

        # Committed once its client had every byte: wait for it, then evict it by hand.
        stored = cached_blob(first.log.parent / "cache", layer.digest)
        assert await wait_until(stored.exists, WITHIN)
        stored.unlink()
        assert sha256_digest(await pull(session, url(third, path))) == layer.digest
        assert upstream_gets(registry, path) == 2

        third.stop()
        assert sha256_digest(await pull(session, url(first, path))) == layer.digest
        assert upstream_gets(registry, path) == 3


async def test_the_others_complete_when_the_filling_replica_dies_mid_fill(
    start_replicas: ReplicaFactory,
    make_fake_upstream: Callable[[], Awaitable[FakeUpstream]],
) -> None:
    """The replica that fetches a blob is killed while its upstream stalls: its client's
    transfer is cut, the other replicas' clients get the whole verified blob, and the upstream
    got one Range request for the rest."""
    upstream = await make_fake_upstream()
    data = os.urandom(1 << 20)
    digest = sha256_digest(data)
    path = f"/v2/team/app/blobs/{digest}"
    stall = Stall()
    upstream.route(path, stalled_resumable(data, stall, first=64 << 10))
    filler, *others = start_replicas(3, upstream.url)

    try:
        async with aiohttp.ClientSession() as session:
            cut = asyncio.create_task(pull(session, url(filler, path)))
            await asyncio.wait_for(stall.first_sent.wait(), WITHIN)
            streaming = []
            for replica in others:
                response = await asyncio.wait_for(session.get(url(replica, path)), WITHIN)
                assert response.status == 200
                # Their fills stream from the filler: its first bytes are here already.
                head = await asyncio.wait_for(response.content.readexactly(1000), WITHIN)
                streaming.append((head, response))
            filler.process.kill()
            filler.process.wait()

            bodies = [
                head + await asyncio.wait_for(response.read(), WITHIN)
                for head, response in streaming
            ]
            with pytest.raises(aiohttp.ClientError):
                await asyncio.wait_for(cut, WITHIN)
    finally:
        stall.resume.set()

    assert [sha256_digest(body) for body in bodies] == [digest, digest]
    asked = [r.headers.get("Range") for r in upstream.seen("GET", path)]
    assert len(asked) == 2 and asked[0] is None, asked  # one whole GET, by the filler
    assert asked[1] is not None and asked[1] != "bytes=0-", asked  # then the rest, once


async def test_the_others_complete_when_the_filling_replica_goes_silent(
    start_replicas: ReplicaFactory,
    make_fake_upstream: Callable[[], Awaitable[FakeUpstream]],
) -> None:
    """The replica that fetches a blob stops (SIGSTOP: its connections stay open, it answers
    nothing and renews nothing): once its stream has stalled past the read timeout and its
    lease expired, the other replicas go on from the upstream with a Range request, and their
    clients get the whole verified blob."""
    upstream = await make_fake_upstream()
    data = os.urandom(1 << 20)
    digest = sha256_digest(data)
    path = f"/v2/team/app/blobs/{digest}"
    stall = Stall()
    upstream.route(path, stalled_resumable(data, stall, first=64 << 10))
    filler, *others = start_replicas(3, upstream.url, settings="read_timeout = 5\n")

    try:
        async with aiohttp.ClientSession() as session:
            cut = asyncio.create_task(pull(session, url(filler, path)))
            await asyncio.wait_for(stall.first_sent.wait(), WITHIN)
            streaming = []
            for replica in others:
                response = await asyncio.wait_for(session.get(url(replica, path)), WITHIN)
                head = await asyncio.wait_for(response.content.readexactly(1000), WITHIN)
                streaming.append((head, response))
            filler.process.send_signal(signal.SIGSTOP)
            bodies = [
                head + await asyncio.wait_for(response.read(), WITHIN)
                for head, response in streaming
            ]
            filler.process.kill()
            filler.process.wait()
            with pytest.raises(aiohttp.ClientError):
                await asyncio.wait_for(cut, WITHIN)
    finally:
        stall.resume.set()

    assert [sha256_digest(body) for body in bodies] == [digest, digest]
    asked = [r.headers.get("Range") for r in upstream.seen("GET", path)]
    assert len(asked) == 2 and asked[0] is None, asked
    assert asked[1] is not None and asked[1] != "bytes=0-", asked


async def test_a_replica_the_filler_refuses_fetches_the_blob_itself_at_once(
    start_replicas: ReplicaFactory,
    make_fake_upstream: Callable[[], Awaitable[FakeUpstream]],
) -> None:
    """A replica configured with another secret is refused by the one fetching a blob: it takes
    the fetch over on that answer (rather than waiting for the other to stream), and both
    clients get the blob."""
    upstream = await make_fake_upstream()
    data = os.urandom(256 << 10)
    digest = sha256_digest(data)
    path = f"/v2/team/app/blobs/{digest}"
    stall = Stall()
    upstream.route(path, stalled_resumable(data, stall, first=64 << 10))
    (filler,) = start_replicas(1, upstream.url)
    (stranger,) = start_replicas(1, upstream.url, secret="a-secret-of-its-own-entirely")

    try:
        async with aiohttp.ClientSession() as session:
            first = asyncio.create_task(pull(session, url(filler, path)))
            await asyncio.wait_for(stall.first_sent.wait(), WITHIN)
            second = asyncio.create_task(pull(session, url(stranger, path)))
            assert await wait_until(lambda: took_over(stranger, "answered 401"), WITHIN)
            assert await wait_until(lambda: len(upstream.seen("GET", path)) == 2, WITHIN)
            stall.resume.set()
            bodies = await asyncio.wait_for(asyncio.gather(first, second), WITHIN)
    finally:
        stall.resume.set()

    assert [sha256_digest(body) for body in bodies] == [digest, digest]


async def test_the_others_complete_when_the_filling_replica_dies_before_its_first_byte(
    start_replicas: ReplicaFactory,
    make_fake_upstream: Callable[[], Awaitable[FakeUpstream]],
) -> None:
    """The replica that fetches a blob is killed after its upstream answered but before any
    body byte came, while another replica waits on it: that one's client still gets the whole
    verified blob, fetched anew from the upstream."""
    upstream = await make_fake_upstream()
    data = os.urandom(256 << 10)
    digest = sha256_digest(data)
    path = f"/v2/team/app/blobs/{digest}"
    stall = Stall()
    upstream.route(path, stalled_resumable(data, stall, first=0))
    filler, other = start_replicas(2, upstream.url)

    try:
        async with aiohttp.ClientSession() as session:
            cut = asyncio.create_task(pull(session, url(filler, path)))
            await asyncio.wait_for(stall.first_sent.wait(), WITHIN)
            waiting = asyncio.create_task(pull(session, url(other, path)))
            # The other replica's fill has asked the filler for the blob.
            assert await wait_until(lambda: has_connection(other.pid, filler.port), WITHIN)
            filler.process.kill()
            filler.process.wait()
            stall.resume.set()
            body = await asyncio.wait_for(waiting, WITHIN)
            with pytest.raises(aiohttp.ClientError):
                await asyncio.wait_for(cut, WITHIN)
    finally:
        stall.resume.set()

    assert sha256_digest(body) == digest
    assert [r.headers.get("Range") for r in upstream.seen("GET", path)] == [None, None]


async def test_a_fill_whose_peer_stream_ends_before_its_first_byte_fetches_the_blob(
    aiohttp_client: ClientFactory, registry: Registry, redis_server: RedisServer, cache_dir: Path
) -> None:
    """The replica named by a blob's fill lease answers with its headers and dies before the
    first body byte: the replica that read from it takes the lease over and fetches the blob
    from the upstream's start, and its client gets the whole verified blob."""
    layer, path = cold_layer(registry, 1 << 20)
    asked: list[bytes] = []

    async def die_after_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append(await reader.readuntil(b"\r\n\r\n"))
        dying.close()  # from now on, connections to it are refused
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            + f"Content-Length: {layer.size}\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()

    dying = await asyncio.start_server(die_after_headers, "127.0.0.1", 0)
    port = dying.sockets[0].getsockname()[1]
    settings = replica_settings(registry.url, redis_server.url, cache_dir)
    lease = f"{settings.redis_prefix}fill:{layer.digest}"
    client = await aiohttp_client(create_app(settings))
    async with redis.asyncio.from_url(redis_server.url) as shared:
        await shared.set(lease, lease_value(f"http://127.0.0.1:{port}", "a-fill"), px=10_000)
    registry.clear_requests()

    answer = await asyncio.wait_for(client.get(path), WITHIN)
    assert answer.status == 200
    assert sha256_digest(await asyncio.wait_for(answer.read(), WITHIN)) == layer.digest
    assert len(asked) == 1 and asked[0].startswith(
        f"GET /_mirror/peer/blobs/{layer.digest}".encode()
    )
    assert upstream_gets(registry, path) == 1


async def test_a_replica_that_sends_a_damaged_copy_of_a_blob_it_stored_is_not_asked_again(
    aiohttp_client: ClientFactory,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    registry: Registry,
    redis_server: RedisServer,
    cache_dir: Path,
) -> None:
    """The replica a blob's lease names as having stored it sends bytes that are not the blob
    (its copy was damaged on its disk): the client whose fill read them is cut, and the next
    pull fetches the blob from the upstream, verified, rather than from that replica again."""
    layer, path = cold_layer(registry, 300_000)
    asked: list[str] = []

    async def damaged(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(body=bytes(layer.size))

    holder = web.Application()
    holder.router.add_get("/_mirror/peer/blobs/{digest}", damaged)
    server = await aiohttp_server(holder, host="127.0.0.1")
    settings = replica_settings(registry.url, redis_server.url, cache_dir)
    client = await aiohttp_client(create_app(settings))
    # As a fill that stored the blob leaves its lease (`FillLeases.keep`).
    kept = lease_value(f"http://127.0.0.1:{server.port}", "a-fill") + " kept"
    async with redis.asyncio.from_url(redis_server.url) as shared:
        await shared.set(f"{settings.redis_prefix}fill:{layer.digest}", kept, px=86_400_000)
    registry.clear_requests()

    await assert_broken(await asyncio.wait_for(client.get(path), WITHIN), layer.data)
    answer = await asyncio.wait_for(client.get(path), WITHIN)
    assert answer.status == 200
    assert sha256_digest(await asyncio.wait_for(answer.read(), WITHIN)) == layer.digest
    assert len(asked) == 1
    assert upstream_gets(registry, path) == 1


async def test_a_manifest_whose_holder_is_gone_is_fetched_from_the_upstream(
    aiohttp_client: ClientFactory,
    registry: Registry,
    redis_server: RedisServer,
    seeded: Seeded,
    cache_dir: Path,
) -> None:
    """Redis names a replica that cannot be reached as the holder of a manifest: the replica
    asked for it fetches it from the upstream, at once, and serves it."""
    settings = replica_settings(registry.url, redis_server.url, cache_dir)
    client = await aiohttp_client(create_app(settings))
    repo, _ = seeded.oci_ref
    digest = seeded.oci.digest
    async with redis.asyncio.from_url(redis_server.url) as shared:
        await shared.set(
            f"{settings.redis_prefix}manifest:{digest}", f"http://127.0.0.1:{free_port()}"
        )
    registry.clear_requests()

    path = f"/v2/{repo}/manifests/{digest}"
    answer = await asyncio.wait_for(client.get(path, headers={"Accept": ACCEPT_ALL}), WITHIN)
    assert answer.status == 200
    assert await answer.read() == seeded.oci.manifest
    assert upstream_gets(registry, path) == 1


async def test_a_manifest_asked_for_where_it_is_not_holds_up_no_other_repository(
    aiohttp_client: ClientFactory,
    registry: Registry,
    redis_server: RedisServer,
    seeded: Seeded,
    cache_dir: Path,
) -> None:
    """A manifest asked for by digest through a repository the upstream has no such manifest
    in is a 404, and the lease that fetch took goes with it: the same digest asked for through
    its own repository is fetched at once, not after the lease runs out."""
    settings = replica_settings(registry.url, redis_server.url, cache_dir)
    client = await aiohttp_client(create_app(settings))
    repo, _ = seeded.oci_ref
    digest = seeded.oci.digest
    headers = {"Accept": ACCEPT_ALL}
    elsewhere = await client.get(f"/v2/nobody/here/manifests/{digest}", headers=headers)
    await assert_oci_error(elsewhere, 404, "MANIFEST_UNKNOWN", "NAME_UNKNOWN")
    started = asyncio.get_running_loop().time()
    answer = await asyncio.wait_for(
        client.get(f"/v2/{repo}/manifests/{digest}", headers=headers), WITHIN
    )
    assert answer.status == 200
    assert await answer.read() == seeded.oci.manifest
    assert asyncio.get_running_loop().time() - started < 5.0


def took_over(replica: MirrorProcess, why: str) -> bool:
    """Whether the replica logged taking a fill over from another, for this reason."""
    return any(
        entry.get("event") == "taking over a blob fill from a replica that cannot serve it"
        and why in str(entry.get("error"))
        for entry in replica.entries()
    )


def has_connection(pid: int, port: int) -> bool:
    """Whether process `pid` holds an established TCP connection to 127.0.0.1:`port`."""
    sockets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            sockets.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue  # closed meanwhile
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            # State 01 is ESTABLISHED (include/net/tcp_states.h); ports are hex.
            port_matches = int(remote.split(":")[1], 16) == port
            if state == "01" and port_matches and f"socket:[{inode}]" in sockets:
                return True
    return False


def replica_settings(upstream: str, redis_url: str, cache_dir: Path) -> Settings:
    """One replica's settings, on the run's store."""
    settings = Settings(
        cache_dir=cache_dir,
        upstreams=(
            UpstreamSettings(default=True, url=upstream, connect_timeout=2.0, read_timeout=5.0),
        ),
        redis_url=redis_url,
        redis_prefix=f"test-{uuid.uuid4().hex[:12]}:",
        peer_url="http://127.0.0.1:9",  # never asked: these tests have one replica
        peer_secret=SECRET,
    )
    return storage.current().applied(settings)


async def test_the_peer_endpoint_answers_only_those_with_the_secret(
    aiohttp_client: ClientFactory,
    registry: Registry,
    redis_server: RedisServer,
    seeded: Seeded,
    cache_dir: Path,
) -> None:
    """Without the replicas' secret, or with a wrong one, the peer endpoint is 401 in OCI form;
    with it, a blob the replica lacks is 404 BLOB_UNKNOWN and one it has is served, ranges
    included; it answers GET alone. Manifests likewise: 404 MANIFEST_UNKNOWN, then the exact
    bytes with their media type."""
    client = await aiohttp_client(
        create_app(replica_settings(registry.url, redis_server.url, cache_dir))
    )
    layer = seeded.schema2.layers[0]
    repo, _ = seeded.schema2_ref
    peer_path = f"/_mirror/peer/blobs/{layer.digest}"

    for headers in ({}, {SECRET_HEADER: "not-the-secret-at-all"}, {SECRET_HEADER: SECRET[:-1]}):
        refused = await client.get(peer_path, headers=headers)
        await assert_oci_error(refused, 401, "UNAUTHORIZED")
        assert SECRET_HEADER in refused.headers["WWW-Authenticate"]
    await assert_oci_error(
        await client.get(peer_path, headers={SECRET_HEADER: SECRET}), 404, "BLOB_UNKNOWN"
    )

    assert (await client.get(f"/v2/{repo}/blobs/{layer.digest}")).status == 200
    served = await client.get(peer_path, headers={SECRET_HEADER: SECRET})
    assert served.status == 200
    assert sha256_digest(await served.read()) == layer.digest
    ranged = await client.get(peer_path, headers={SECRET_HEADER: SECRET, "Range": "bytes=100-"})
    assert ranged.status == 206
    assert len(await ranged.read()) == layer.size - 100
    refused = await client.get(peer_path, headers={SECRET_HEADER: SECRET.upper()})
    await assert_oci_error(refused, 401, "UNAUTHORIZED")
    head = await client.head(peer_path, headers={SECRET_HEADER: SECRET})
    assert head.status == 405

    manifest_path = f"/_mirror/peer/manifests/{seeded.schema2.digest}"
    await assert_oci_error(await client.get(manifest_path), 401, "UNAUTHORIZED")
    await assert_oci_error(
        await client.get(manifest_path, headers={SECRET_HEADER: SECRET}), 404, "MANIFEST_UNKNOWN"
    )
    assert (await client.get(f"/v2/{repo}/manifests/{seeded.schema2.digest}")).status == 200
    served = await client.get(manifest_path, headers={SECRET_HEADER: SECRET})
    assert served.status == 200
    assert await served.read() == seeded.schema2.manifest
    assert served.headers["Content-Type"] == seeded.schema2.media_type


async def test_a_mirror_that_is_no_replica_has_no_peer_endpoint(
    aiohttp_client: ClientFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """Without `peer_url`, the peer path is no endpoint at all, secret or not."""
    settings = Settings(
        cache_dir=cache_dir, upstreams=(UpstreamSettings(default=True, url=registry.url),)
    )
    client = await aiohttp_client(create_app(storage.current().applied(settings)))
    layer = seeded.schema2.layers[0]
    repo, _ = seeded.schema2_ref
    assert (await client.get(f"/v2/{repo}/blobs/{layer.digest}")).status == 200
    answer = await client.get(
        f"/_mirror/peer/blobs/{layer.digest}", headers={SECRET_HEADER: SECRET}
    )
    await assert_oci_error(answer, 404, "NAME_UNKNOWN")


async def test_a_replica_whose_redis_is_down_fetches_blobs_by_itself(
    aiohttp_client: ClientFactory,
    registry: Registry,
    seeded: Seeded,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    """With its Redis unreachable from the start, or gone since, a replica fetches a missing
    blob from the upstream itself, without waiting on Redis."""
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    never = await aiohttp_client(create_app(replica_settings(registry.url, nowhere, cache_dir)))
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        settings = replica_settings(registry.url, redis.url, tmp_path / "other-cache")
        gone = await aiohttp_client(create_app(settings))
    finally:
        redis.stop()
    registry.clear_requests()

    for client, (repo, _), image in (
        (never, seeded.oci_ref, seeded.oci),
        (gone, seeded.schema2_ref, seeded.schema2),
    ):
        layer = image.layers[0]
        path = f"/v2/{repo}/blobs/{layer.digest}"
        answer = await asyncio.wait_for(client.get(path), WITHIN)
        assert answer.status == 200
        assert sha256_digest(await answer.read()) == layer.digest
        assert upstream_gets(registry, path) == 1
