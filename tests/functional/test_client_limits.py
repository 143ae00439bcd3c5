"""Clients cannot hold the mirror's resources: slow readers time out, connections are capped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from mirror.api import listener
from mirror.config import Settings, UpstreamSettings
from mirror.server import serving
from mirror.tls import ServerTls
from mirror.workers import listening_socket
from tests.conftest import Seeded
from tests.faults import FakeFactory, Stall, content, slow_content
from tests.support.certs import CertificateAuthority
from tests.support.clients import (
    is_closed_by_server,
    open_connection,
    read_answer,
    request_bytes,
    stalled_get,
)
from tests.support.images import OCI_MANIFEST, Image, make_image, push_image, sha256_digest
from tests.support.metrics import Scrape
from tests.support.oci import cached_blob, wait_until
from tests.support.registry import Registry
from tests.support.served import Served, ServeFactory


@pytest.fixture(scope="module")
def big_manifest(registry: Registry) -> tuple[str, str]:
    """A 1 MiB manifest (a big annotation), far more than a stopped reader's window: (repo,
    digest)."""
    image = make_image(oci=True, seed="big-manifest")
    document = json.loads(image.manifest)
    document["annotations"] = {"padding": "x" * (1 << 20)}
    manifest = json.dumps(document).encode()
    padded = Image(image.config, image.layers, manifest, sha256_digest(manifest), OCI_MANIFEST)
    push_image(registry.url, "limits/big-manifest", None, padded)
    return "limits/big-manifest", padded.digest


async def _cached(served: Served, path: str, cache_dir: Path, digest: str) -> None:
    status, _, _ = await served.get(path)
    assert status == 200
    assert await wait_until(cached_blob(cache_dir, digest).exists)


@pytest.mark.parametrize("kind", ["cached blob", "blob from its fill", "manifest"])
async def test_a_reader_that_stops_is_disconnected_after_the_send_timeout(
    serve: ServeFactory,
    seeded: Seeded,
    big_manifest: tuple[str, str],
    cache_dir: Path,
    kind: str,
) -> None:
    """A client that takes no data for `send_timeout` loses its connection, whatever it asked
    for: a blob by sendfile, a blob streamed from its download, or a manifest."""
    served = await serve(send_timeout=1.0)
    repo, _ = seeded.big_ref
    layer = seeded.big.layers[0]
    path = f"/v2/{repo}/blobs/{layer.digest}"
    if kind == "cached blob":
        await _cached(served, path, cache_dir, layer.digest)
    elif kind == "manifest":
        path = f"/v2/{big_manifest[0]}/manifests/{big_manifest[1]}"
    with structlog.testing.capture_logs() as logs:
        client = await stalled_get(served.host, served.port, path)
        try:
            assert await wait_until(lambda: served.connections.count == 1, within=10)
            assert await wait_until(lambda: served.connections.count == 0, within=30)
        finally:
            client.close()
    assert not [e for e in logs if e.get("log_level") in ("error", "critical")], logs


async def test_a_reader_that_keeps_reading_slowly_is_not_disconnected(
    serve: ServeFactory, seeded: Seeded, cache_dir: Path
) -> None:
    """The timeout is about progress, not duration: a slow but steady reader gets every byte."""
    served = await serve(send_timeout=2.0)
    repo, _ = seeded.big_ref
    layer = seeded.big.layers[0]
    path = f"/v2/{repo}/blobs/{layer.digest}"
    await _cached(served, path, cache_dir, layer.digest)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    wanted = 2 << 20
    with contextlib.closing(sock):
        await loop.sock_connect(sock, (served.host, served.port))
        request = f"GET {path} HTTP/1.1\r\nHost: m\r\nRange: bytes=0-{wanted - 1}\r\n\r\n"
        await loop.sock_sendall(sock, request.encode())
        raw = b""
        while (head := raw.find(b"\r\n\r\n")) < 0 or len(raw) - head - 4 < wanted:
            await asyncio.sleep(0.1)  # far less than the timeout between reads
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10)
            assert chunk, "the mirror closed the connection of a reader making progress"
            raw += chunk
    assert raw.startswith(b"HTTP/1.1 206 ")
    assert raw[head + 4 :] == layer.data[:wanted]


async def test_connections_beyond_the_cap_are_refused_with_503_and_retry_after(
    serve: ServeFactory, seeded: Seeded, cache_dir: Path
) -> None:
    """With every connection busy, a new one gets an OCI 503 at once; served again later."""
    served = await serve(max_connections=2)
    repo, _ = seeded.big_ref
    layer = seeded.big.layers[0]
    path = f"/v2/{repo}/blobs/{layer.digest}"
    await _cached(served, path, cache_dir, layer.digest)
    assert await wait_until(lambda: served.connections.count == 0)
    busy = [await stalled_get(served.host, served.port, path) for _ in range(2)]
    try:
        assert await wait_until(lambda: served.connections.count == 2)
        extra = await open_connection(served.host, served.port)
        with contextlib.closing(extra):
            await asyncio.get_running_loop().sock_sendall(extra, request_bytes("/v2/", close=True))
            status, raw = await read_answer(extra)
        assert status == 503, raw[:300]
        head, _, body = raw.partition(b"\r\n\r\n")
        assert b"\r\nRetry-After: " in head
        assert json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"
    finally:
        for sock in busy:
            sock.close()
    assert await wait_until(lambda: served.connections.count == 0, within=10)
    status, body, _ = await served.get(path)
    assert status == 200
    assert body == layer.data


async def test_idle_connections_are_closed_to_make_room(serve: ServeFactory) -> None:
    """At the cap, the connection idle the longest is closed for a newcomer; busy ones stay."""
    served = await serve(max_connections=2)
    loop = asyncio.get_running_loop()
    never_asked = await open_connection(served.host, served.port)
    kept_alive = await open_connection(served.host, served.port)
    with contextlib.closing(never_asked), contextlib.closing(kept_alive):
        await loop.sock_sendall(kept_alive, request_bytes("/v2/"))
        assert (await loop.sock_recv(kept_alive, 4096)).startswith(b"HTTP/1.1 200 ")
        assert await wait_until(lambda: served.connections.count == 2)
        status, body, _ = await served.get("/v2/")
        assert (status, body) == (200, b"{}")
        assert await wait_until(lambda: is_closed_by_server(never_asked))
        assert not is_closed_by_server(kept_alive)
        await loop.sock_sendall(kept_alive, request_bytes("/v2/"))
        assert (await loop.sock_recv(kept_alive, 4096)).startswith(b"HTTP/1.1 200 ")


async def _served_over_tls(served: Served, context: ssl.SSLContext) -> bool:
    """Whether a client that completes its handshake at once gets /healthz answered."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(served.host, served.port, ssl=context), 2
        )
    except (OSError, TimeoutError):  # ssl.SSLError is an OSError
        return False
    try:
        writer.write(request_bytes("/healthz", close=True))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return head.startswith(b"HTTP/1.1 200 ")
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _stall_handshakes(host: str, port: int, count: int) -> list[socket.socket]:
    """Connections that send the first byte of a TLS record and nothing more."""
    stalled = [await open_connection(host, port) for _ in range(count)]
    for sock in stalled:
        sock.send(b"\x16")
    return stalled


async def test_stalled_tls_handshakes_give_their_places_back(
    serve: ServeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections that begin a TLS handshake and go quiet hold places under the cap only for
    the handshake timeout: they are closed, and a client that completes its handshake is then
    served."""
    monkeypatch.setattr(listener, "HANDSHAKE_TIMEOUT", 0.5)
    authority = CertificateAuthority(tmp_path / "ca")
    cert = authority.issue("mirror")
    served = await serve(tls_cert=cert.cert, tls_key=cert.key, max_connections=2)
    context = ssl.create_default_context(cafile=str(authority.ca_file))
    stalled = await _stall_handshakes(served.host, served.port, 6)
    try:
        deadline = time.monotonic() + 3
        while not await _served_over_tls(served, context):
            assert time.monotonic() < deadline, "still no place for a well-behaved client"
            await asyncio.sleep(0.1)
        assert await wait_until(lambda: all(is_closed_by_server(s) for s in stalled))
    finally:
        for sock in stalled:
            sock.close()


async def test_stopping_waits_for_stalled_handshakes_no_longer_than_the_grace(
    registry: Registry, cache_dir: Path, tmp_path: Path
) -> None:
    """A TLS server stopped while connections sit in their handshake ends within the shutdown
    grace (the handshakes are cut), rather than waiting for them to time out."""
    authority = CertificateAuthority(tmp_path / "ca")
    cert = authority.issue("mirror")
    settings = Settings(
        cache_dir=cache_dir,
        upstreams=(UpstreamSettings(default=True, url=registry.url),),
        host="127.0.0.1",
        port=0,
        tls_cert=cert.cert,
        tls_key=cert.key,
        shutdown_grace=0.5,
    )
    sock = listening_socket(settings)
    tls = ServerTls.of(settings)
    assert tls is not None
    stalled: list[socket.socket] = []
    try:
        async with asyncio.timeout(3):
            async with serving(settings, sock, tls.context, settle=0):
                stalled = await _stall_handshakes("127.0.0.1", sock.getsockname()[1], 5)
                await asyncio.sleep(0.2)  # accepted, and in their handshakes
                started = time.monotonic()
        assert time.monotonic() - started < 0.5 + 1.5
        assert all(is_closed_by_server(s) for s in stalled)
    finally:
        sock.close()
        for s in stalled:
            s.close()


def _spool_descriptors(cache_dir: Path, ending: str = ".part") -> int:
    """Descriptors this process (the mirror's, in these tests) holds on download spool files
    (or, by their `ending`, on other files in the spool: ".claim" for claims)."""
    spool = str(cache_dir.resolve() / "spool")
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            found += target.startswith(spool) and target.endswith(ending)
    return found


async def _reading(host: str, port: int, path: str) -> socket.socket:
    """A client that asked for `path` and has its answer's first bytes."""
    sock = await open_connection(host, port)
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, request_bytes(path))
    raw = b""
    while (head := raw.find(b"\r\n\r\n")) < 0 or len(raw) == head + 4:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 10)
        assert chunk, "the mirror closed the connection"
        raw += chunk
    assert raw.startswith(b"HTTP/1.1 200 ")
    return sock


async def test_clients_that_reset_leave_no_reader_of_a_stalled_download(
    serve: ServeFactory, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """Clients that reset their connections while their blob waits for a slow upstream take
    nothing with them past the connection cap: their requests let go of the spool file at once,
    not when the upstream next sends bytes."""
    fake = await make_fake_upstream()
    stall = Stall()
    data = b"reset-readers" * 100_000
    path = f"/v2/lib/app/blobs/{sha256_digest(data)}"
    fake.route(path, slow_content(data, stall, first=64 * 1024))
    upstream = UpstreamSettings(default=True, url=fake.url, connect_timeout=2.0, read_timeout=30.0)
    served = await serve(upstreams=(upstream,))
    staying = await _reading(served.host, served.port, path)
    try:
        assert await wait_until(lambda: _spool_descriptors(cache_dir) > 0)
        before = _spool_descriptors(cache_dir)
        leaving = [await _reading(served.host, served.port, path) for _ in range(20)]
        assert _spool_descriptors(cache_dir) >= before + 20
        for sock in leaving:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset: the mirror sees the connection lost, not a half-close
        assert await wait_until(lambda: served.connections.count == 1, within=10)
        assert await wait_until(lambda: _spool_descriptors(cache_dir) == before, within=10), (
            f"{_spool_descriptors(cache_dir) - before} spool descriptors outlive their clients"
        )
    finally:
        stall.resume.set()
        staying.close()


async def _scraped(served: Served, check: Callable[[Scrape], bool]) -> Scrape:
    """`/metrics` once `check` holds (a request is counted once it is answered), or after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        _, text, _ = await served.get("/metrics")
        found = Scrape.parse(text.decode())
        if check(found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_clients_that_reset_while_waiting_for_a_download_slot_leave_nothing_waiting(
    serve: ServeFactory, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """With the one download slot busy, clients that ask for other blobs and reset their
    connections take their downloads' places in the queue with them: each start lets go of its
    claim at once, not when the wait for a slot would give up, and asks no upstream."""
    fake = await make_fake_upstream()
    stall = Stall()
    held = b"slot-holder" * 100_000
    held_path = f"/v2/lib/app/blobs/{sha256_digest(held)}"
    fake.route(held_path, slow_content(held, stall, first=64 * 1024))
    cold = [f"cold-{n}".encode() * 1000 for n in range(10)]
    paths = [f"/v2/lib/app/blobs/{sha256_digest(data)}" for data in cold]
    for path, data in zip(paths, cold, strict=True):
        fake.route(path, content(data))
    upstream = UpstreamSettings(default=True, url=fake.url, connect_timeout=2.0, read_timeout=30.0)
    served = await serve(upstreams=(upstream,), max_fills=1, fill_wait=60.0)
    holding = await _reading(served.host, served.port, held_path)
    try:
        before = _spool_descriptors(cache_dir, ".claim")  # the held download's own
        waiting = [await stalled_get(served.host, served.port, path) for path in paths]
        assert await wait_until(
            lambda: _spool_descriptors(cache_dir, ".claim") == before + len(paths), within=10
        ), "each waiting start holds its route's claim"
        for sock in waiting:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        # Far less than the 60 s a start waits for a slot before it gives up.
        assert await wait_until(
            lambda: _spool_descriptors(cache_dir, ".claim") == before, within=10
        ), f"{_spool_descriptors(cache_dir, '.claim') - before} claims outlive their clients"
        gone = {"kind": "blob", "status": "499", "cache": "miss"}  # answered nobody
        metrics = await _scraped(
            served, lambda m: m.get("mirror_requests_total", **gone) == len(paths)
        )
        assert metrics.get("mirror_requests_total", **gone) == len(paths)
        assert metrics.get("mirror_download_slots_queued") == 0
        assert metrics.get("mirror_fills_in_flight") == 1
        assert all(fake.seen("GET", path) == [] for path in paths)
    finally:
        stall.resume.set()
        holding.close()
    # Nothing of theirs is left behind: asked again, the blobs come.
    for path, data in zip(paths[:2], cold, strict=False):
        status, body, _ = await served.get(path)
        assert (status, body) == (200, data)
