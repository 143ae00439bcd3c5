"""Two mirror processes on one cache directory: a client of either ends cleanly only with the
verified blob, whatever other fills of the same digest do meanwhile."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.daemons import MirrorServer
from tests.faults import FakeFactory, Stall
from tests.support.images import sha256_digest
from tests.support.oci import cached_blob, spool_files, wait_until

BLOB = hashlib.sha256(b"integrity").digest() * (2 * 1024 * 1024 // 32)  # 2 MiB
DIGEST = sha256_digest(BLOB)
PATH = f"/v2/lib/app/blobs/{DIGEST}"
FIRST = 256 * 1024


def _lying_slow(stall: Stall) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The blob's digest header but other bytes, chunked (so no length gives the lie away);
    the rest waits for `stall`."""
    wrong = bytes(b ^ 0xFF for b in BLOB)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "application/octet-stream", "Docker-Content-Digest": DIGEST}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(wrong[:FIRST])
        stall.first_sent.set()
        await stall.resume.wait()
        await response.write(wrong[FIRST:])
        await response.write_eof()
        return response

    return handler


@pytest.fixture
def two_mirrors(tmp_path: Path) -> Iterator[Callable[[str], tuple[MirrorServer, MirrorServer]]]:
    """Start two `mirror serve` processes sharing one cache directory."""
    started: list[MirrorServer] = []

    def start(upstream: str) -> tuple[MirrorServer, MirrorServer]:
        for name in ("one", "two"):
            started.append(
                MirrorServer.start(
                    tmp_path / name, upstream, tag_ttl=300, cache_dir=tmp_path / "cache"
                )
            )
        return started[0], started[1]

    try:
        yield start
    finally:
        for server in started:
            server.stop()


async def _first_bytes(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    response = await session.get(url)
    assert response.status == 200
    assert await response.content.readexactly(1024)
    return response


async def test_a_follower_never_ends_cleanly_on_a_failed_fill_when_another_commits(
    make_fake_upstream: FakeFactory,
    two_mirrors: Callable[[str], tuple[MirrorServer, MirrorServer]],
    tmp_path: Path,
) -> None:
    """Process one fills from a lying upstream, process two's client follows it; the verified
    blob is committed by another fill meanwhile: both clients see a broken transfer, and the
    next pull gets the verified blob."""
    fake = await make_fake_upstream()
    stall = Stall()
    fake.route(PATH, _lying_slow(stall))
    one, two = two_mirrors(fake.url)
    cache_dir = tmp_path / "cache"
    async with aiohttp.ClientSession() as session:
        leader = await _first_bytes(session, one.url + PATH)
        follower = await _first_bytes(session, two.url + PATH)
        # Another fill of the same digest commits the verified blob, as an import or another
        # route's fill would.
        final = cached_blob(cache_dir, DIGEST)
        final.parent.mkdir(parents=True, exist_ok=True)
        final.write_bytes(BLOB)
        await asyncio.sleep(0.3)  # time for a follower that trusts the final name to end
        stall.resume.set()
        for response in (leader, follower):
            try:
                body = await asyncio.wait_for(response.read(), 20)
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
                continue
            raise AssertionError(f"clean end after {len(body) + 1024} of {len(BLOB)} bytes")
        assert await wait_until(lambda: spool_files(cache_dir) == []), spool_files(cache_dir)
        again = await session.get(two.url + PATH)
        assert again.status == 200
        assert await again.read() == BLOB
