"""No client can make the mirror download any number of blobs at once: fills beyond the caps
wait their turn, then fail with 503, and a fill nobody reads gives way to one that is wanted.
Nor can any upstream make one download bigger than the cache could keep."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from mirror.config import Settings, SizeLimit, UpstreamSettings
from tests.conftest import MirrorFromSettings
from tests.faults import Endless, FakeFactory, Handler, Stall, slow_content
from tests.support.images import sha256_digest
from tests.support.oci import assert_oci_error, cached_blob, spool_files, wait_until

Client = TestClient[Any, Any]


def _blob(n: int) -> tuple[bytes, str]:
    data = hashlib.sha256(f"limits-{n}".encode()).digest() * (1024 * 1024 // 32)  # 1 MiB
    return data, sha256_digest(data)


async def _mirror(
    mirror_from: MirrorFromSettings,
    cache_dir: Path,
    *upstreams: UpstreamSettings,
    max_fills: int = 32,
    fill_wait: float = 20.0,
    max_size: int | None = None,
    min_free: int | None = None,
) -> Client:
    settings = Settings(
        cache_dir=cache_dir,
        upstreams=upstreams,
        max_fills=max_fills,
        fill_wait=fill_wait,
        max_size=SizeLimit(bytes=max_size) if max_size is not None else None,
        min_free=SizeLimit(bytes=min_free) if min_free is not None else None,
    )
    return await mirror_from(settings)


async def _started(client: Client, path: str) -> aiohttp.ClientResponse:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    assert await response.content.readexactly(1024)
    return response


async def test_a_fill_beyond_the_cap_waits_then_fails_with_503_and_retry_after(
    mirror_from: MirrorFromSettings, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """Two fills run; the third waits `fill_wait`, then gets 503 UNAVAILABLE with Retry-After,
    and was never asked of the upstream."""
    fake = await make_fake_upstream()
    stall = Stall()
    paths = []
    for n in range(3):
        data, digest = _blob(n)
        paths.append(f"/v2/lib/app/blobs/{digest}")
        fake.route(paths[-1], slow_content(data, stall, first=64 * 1024))
    client = await _mirror(
        mirror_from,
        cache_dir,
        UpstreamSettings(url=fake.url, default=True),
        max_fills=2,
        fill_wait=1.0,
    )
    running = [await _started(client, path) for path in paths[:2]]
    refused = await client.get(paths[2])
    await assert_oci_error(refused, 503, "UNAVAILABLE")
    assert int(refused.headers["Retry-After"]) >= 1
    assert fake.seen("GET", paths[2]) == []
    stall.resume.set()
    for n, response in enumerate(running):
        assert await response.read() == _blob(n)[0][1024:]


async def test_a_waiting_fill_starts_when_a_slot_frees(
    mirror_from: MirrorFromSettings, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """With one slot, the second blob's client waits (headers not yet sent) and gets its blob
    once the first download is done."""
    fake = await make_fake_upstream()
    first_stall, second_stall = Stall(), Stall()
    second_stall.resume.set()
    (data1, digest1), (data2, digest2) = _blob(10), _blob(11)
    fake.route(f"/v2/lib/app/blobs/{digest1}", slow_content(data1, first_stall, first=64 * 1024))
    fake.route(f"/v2/lib/app/blobs/{digest2}", slow_content(data2, second_stall, first=64 * 1024))
    client = await _mirror(
        mirror_from,
        cache_dir,
        UpstreamSettings(url=fake.url, default=True),
        max_fills=1,
        fill_wait=30.0,
    )
    first = await _started(client, f"/v2/lib/app/blobs/{digest1}")
    second = asyncio.ensure_future(client.get(f"/v2/lib/app/blobs/{digest2}"))
    await asyncio.sleep(0.3)
    assert not second.done(), "the second download waits for the slot"
    assert fake.seen("GET", f"/v2/lib/app/blobs/{digest2}") == []
    first_stall.resume.set()
    assert await first.read() == data1[1024:]
    response = await asyncio.wait_for(second, 10)
    assert response.status == 200
    assert await response.read() == data2


async def test_the_per_upstream_cap_holds_back_only_its_own_registry(
    mirror_from: MirrorFromSettings, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """A registry at its own cap makes its next blob wait; another registry's blob goes ahead."""
    busy, other = await make_fake_upstream(), await make_fake_upstream()
    stall = Stall()
    (data1, digest1), (data2, digest2), (data3, digest3) = _blob(20), _blob(21), _blob(22)
    busy.route(f"/v2/lib/app/blobs/{digest1}", slow_content(data1, stall, first=64 * 1024))
    busy.route(f"/v2/lib/app/blobs/{digest2}", slow_content(data2, stall, first=64 * 1024))
    done = Stall()
    done.resume.set()
    other.route(f"/v2/lib/app/blobs/{digest3}", slow_content(data3, done, first=64 * 1024))
    client = await _mirror(
        mirror_from,
        cache_dir,
        UpstreamSettings(name="busy.test", url=busy.url, default=True, max_fills=1),
        UpstreamSettings(name="other.test", url=other.url),
        max_fills=4,
        fill_wait=1.0,
    )
    first = await _started(client, f"/v2/lib/app/blobs/{digest1}")
    held = await client.get(f"/v2/lib/app/blobs/{digest2}")
    await assert_oci_error(held, 503, "UNAVAILABLE")
    elsewhere = await client.get(f"/v2/other.test/lib/app/blobs/{digest3}")
    assert elsewhere.status == 200
    assert await elsewhere.read() == data3
    stall.resume.set()
    assert await first.read() == data1[1024:]


def _trickle(data: bytes, chunk: int, pause: float) -> Handler:
    """A slow upstream: `chunk` bytes every `pause` seconds."""
    digest = sha256_digest(data)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}
        )
        response.content_length = len(data)
        await response.prepare(request)
        for start in range(0, len(data), chunk):
            await response.write(data[start : start + chunk])
            await asyncio.sleep(pause)
        await response.write_eof()
        return response

    return handler


async def test_an_abandoned_fill_gives_way_to_a_waiting_one(
    mirror_from: MirrorFromSettings, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """A client starts a slow download and leaves; with the one slot wanted by another blob,
    the abandoned download is given up (and not cached) and the waiting one completes."""
    fake = await make_fake_upstream()
    free = Stall()
    free.resume.set()
    (data1, digest1), (data2, digest2) = _blob(30), _blob(31)
    fake.route(f"/v2/lib/app/blobs/{digest1}", _trickle(data1, 8 * 1024, 0.05))  # ~6 s
    fake.route(f"/v2/lib/app/blobs/{digest2}", slow_content(data2, free, first=64 * 1024))
    client = await _mirror(
        mirror_from,
        cache_dir,
        UpstreamSettings(url=fake.url, default=True),
        max_fills=1,
        fill_wait=20.0,
    )
    leaving = await _started(client, f"/v2/lib/app/blobs/{digest1}")
    leaving.close()  # the client goes away after its first bytes
    wanted = await asyncio.wait_for(client.get(f"/v2/lib/app/blobs/{digest2}"), 15)
    assert wanted.status == 200
    assert await wanted.read() == data2
    assert await wait_until(lambda: cached_blob(cache_dir, digest2).exists())
    await asyncio.sleep(7)  # as long as the given-up download would have taken
    assert not cached_blob(cache_dir, digest1).exists()


async def test_a_fill_that_is_read_is_never_given_up(
    mirror_from: MirrorFromSettings, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """While its client still reads, a download keeps its slot: the waiting one gets 503."""
    fake = await make_fake_upstream()
    stall = Stall()
    (data1, digest1), (data2, digest2) = _blob(40), _blob(41)
    fake.route(f"/v2/lib/app/blobs/{digest1}", slow_content(data1, stall, first=64 * 1024))
    fake.route(f"/v2/lib/app/blobs/{digest2}", slow_content(data2, stall, first=64 * 1024))
    client = await _mirror(
        mirror_from,
        cache_dir,
        UpstreamSettings(url=fake.url, default=True),
        max_fills=1,
        fill_wait=3.0,
    )
    reading = await _started(client, f"/v2/lib/app/blobs/{digest1}")
    refused = await client.get(f"/v2/lib/app/blobs/{digest2}")
    await assert_oci_error(refused, 503, "UNAVAILABLE")
    stall.resume.set()
    assert await reading.read() == data1[1024:]


ANY_DIGEST = "sha256:" + "5e" * 32
ANY_PATH = f"/v2/lib/app/blobs/{ANY_DIGEST}"
MiB = 1 << 20
# What may be on its way between the fake and the mirror when the mirror lets go: the two
# sockets' buffers on loopback, generously.
SOCKET_BUFFERS = 32 * MiB


@pytest.mark.parametrize(
    ("limits", "named"),
    [
        ({"max_size": 100 * MiB, "min_free": 1 << 30}, "disk"),
        ({"min_free": 1 << 30}, "disk"),
        ({}, "disk"),
    ],
)
async def test_a_blob_announced_bigger_than_the_cache_could_keep_is_refused_before_any_header(
    mirror_from: MirrorFromSettings,
    make_fake_upstream: FakeFactory,
    cache_dir: Path,
    limits: dict[str, int],
    named: str,
) -> None:
    """`Content-Length: 10000000000000` is past what any test disk holds, cap or none: 507
    with an OCI error naming the bound, the upstream let go, nothing in the spool."""
    fake = await make_fake_upstream()
    upstream = Endless(length=10_000_000_000_000)
    fake.route(ANY_PATH, upstream)
    client = await _mirror(
        mirror_from, cache_dir, UpstreamSettings(url=fake.url, default=True), **limits
    )
    response = await client.get(ANY_PATH)
    document = await assert_oci_error(response, 507, "UNAVAILABLE")
    assert named in document["errors"][0]["message"], document
    assert await asyncio.wait_for(upstream.stopped.wait(), 5) is True
    assert spool_files(cache_dir) == []


async def test_an_endless_chunked_blob_is_cut_off_at_the_cap_and_not_kept(
    mirror_from: MirrorFromSettings, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """With no size announced, the fill stops once it has more than the cap: its client's
    body breaks off (never a clean end), the upstream is let go, the spool is emptied."""
    fake = await make_fake_upstream()
    upstream = Endless()
    fake.route(ANY_PATH, upstream)
    client = await _mirror(
        mirror_from, cache_dir, UpstreamSettings(url=fake.url, default=True), max_size=8 * MiB
    )
    response = await client.get(ANY_PATH)
    assert response.status == 200
    received = 0
    with pytest.raises(aiohttp.ClientPayloadError):
        async for chunk in response.content.iter_any():
            received += len(chunk)
    assert received <= 8 * MiB
    assert await asyncio.wait_for(upstream.stopped.wait(), 5) is True
    assert upstream.sent < 8 * MiB + SOCKET_BUFFERS, upstream.sent
    assert await wait_until(lambda: spool_files(cache_dir) == []), spool_files(cache_dir)
    assert not cached_blob(cache_dir, ANY_DIGEST).exists()


async def test_an_endless_blob_whose_client_left_stops_at_the_cap(
    mirror_from: MirrorFromSettings, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """The fill belongs to the app and outlives its client, but not past the cap."""
    fake = await make_fake_upstream()
    upstream = Endless()
    fake.route(ANY_PATH, upstream)
    client = await _mirror(
        mirror_from, cache_dir, UpstreamSettings(url=fake.url, default=True), max_size=8 * MiB
    )
    leaving = await _started(client, ANY_PATH)
    leaving.close()
    assert await asyncio.wait_for(upstream.stopped.wait(), 5) is True
    assert upstream.sent < 8 * MiB + SOCKET_BUFFERS, upstream.sent
    assert await wait_until(lambda: spool_files(cache_dir) == []), spool_files(cache_dir)


async def test_a_big_chunked_blob_with_no_limits_set_comes_whole(
    mirror_from: MirrorFromSettings, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """A body with no size, past several looks at the disk, is not held to any bound but the
    disk's own room: it arrives intact and is kept."""
    data = hashlib.sha256(b"big").digest() * (72 * MiB // 32)
    digest = sha256_digest(data)

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(data), 4 * MiB):
            await response.write(data[start : start + 4 * MiB])
        await response.write_eof()
        return response

    fake = await make_fake_upstream()
    fake.route(f"/v2/lib/app/blobs/{digest}", chunked)
    client = await _mirror(mirror_from, cache_dir, UpstreamSettings(url=fake.url, default=True))
    response = await client.get(f"/v2/lib/app/blobs/{digest}")
    assert response.status == 200
    assert await response.read() == data
    assert await wait_until(lambda: cached_blob(cache_dir, digest).exists())
