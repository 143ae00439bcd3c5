"""One upstream fetch per blob, streamed to every waiting client as it arrives."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient

from mirror.pullthrough.follower import FollowedFill
from tests.conftest import MirrorFactory
from tests.faults import (
    FakeFactory,
    FakeUpstream,
    Handler,
    Stall,
    content,
    dying_content,
    resumable_content,
    slow_content,
)
from tests.support.images import sha256_digest
from tests.support.oci import assert_broken, cached_blob, spool_files, wait_until

BLOB = hashlib.sha256(b"seed").digest() * (4 * 1024 * 1024 // 32)  # 4 MiB
DIGEST = sha256_digest(BLOB)
PATH = f"/v2/lib/shared/blobs/{DIGEST}"
FIRST = 512 * 1024  # what the slow upstream sends before it stalls
CLIENTS = 20


async def _stalling(
    make_fake_upstream: FakeFactory, first: int = FIRST
) -> tuple[FakeUpstream, Stall]:
    """An upstream that sends the first `first` bytes of BLOB at PATH, then stalls until its
    `Stall` is resumed."""
    fake = await make_fake_upstream()
    stall = Stall()
    fake.route(PATH, slow_content(BLOB, stall, first=first))
    return fake, stall


async def _first_bytes(client: TestClient[Any, Any]) -> aiohttp.ClientResponse:
    response = await client.get(PATH)
    assert response.status == 200
    assert response.headers["Content-Length"] == str(len(BLOB))
    assert response.headers["Docker-Content-Digest"] == DIGEST
    assert await response.content.readexactly(1024)
    return response


@dataclass
class TwoInstances:
    """Two mirrors on one cache directory (as workers or replicas are), the first filling BLOB
    from an upstream that stalls after FIRST bytes, with its first client reading."""

    fake: FakeUpstream
    stall: Stall
    first: TestClient[Any, Any]
    second: TestClient[Any, Any]
    leader: aiohttp.ClientResponse


@pytest.fixture
async def two(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, cache_dir: Path
) -> TwoInstances:
    fake, stall = await _stalling(make_fake_upstream)
    first = await make_mirror(fake, cache_dir=cache_dir)
    second = await make_mirror(fake, cache_dir=cache_dir)
    return TwoInstances(fake, stall, first, second, await _first_bytes(first))


async def test_concurrent_pulls_share_one_upstream_get_and_stream_early(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """20 clients, one upstream GET; each gets its first bytes before the upstream finishes."""
    fake, stall = await _stalling(make_fake_upstream)
    client = await make_mirror(fake)
    responses = await asyncio.wait_for(
        asyncio.gather(*(_first_bytes(client) for _ in range(CLIENTS))), 20
    )
    assert not stall.finished, "every client had bytes while the upstream was still sending"
    stall.resume.set()
    bodies = await asyncio.gather(*(r.read() for r in responses))
    assert {hashlib.sha256(BLOB[:1024] + b).hexdigest() for b in bodies} == {DIGEST[7:]}
    assert len(fake.seen("GET", PATH)) == 1
    assert await wait_until(lambda: cached_blob(cache_dir, DIGEST).exists())


async def test_fill_completes_when_the_first_client_goes_away(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """The fill belongs to the mirror: the client that started it leaving stops nothing."""
    fake, stall = await _stalling(make_fake_upstream, first=len(BLOB) // 10)
    client = await make_mirror(fake)
    first = await _first_bytes(client)
    others = await asyncio.gather(*(_first_bytes(client) for _ in range(CLIENTS - 1)))
    first.close()  # gone at about 10%
    stall.resume.set()
    bodies = await asyncio.gather(*(r.read() for r in others))
    assert {hashlib.sha256(BLOB[:1024] + b).hexdigest() for b in bodies} == {DIGEST[7:]}
    assert await wait_until(lambda: cached_blob(cache_dir, DIGEST).exists())
    assert cached_blob(cache_dir, DIGEST).read_bytes() == BLOB
    assert len(fake.seen("GET", PATH)) == 1


async def test_upstream_death_fails_every_reader_and_keeps_nothing(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """All 20 clients see an error (never a clean short body); the spool is gone."""
    fake = await make_fake_upstream()
    fake.route(PATH, dying_content(BLOB, cut=len(BLOB) // 2))
    client = await make_mirror(fake)
    responses = await asyncio.gather(*(client.get(PATH) for _ in range(CLIENTS)))
    for response in responses:
        await assert_broken(response, BLOB)
    assert await wait_until(lambda: spool_files(cache_dir) == []), spool_files(cache_dir)
    assert not cached_blob(cache_dir, DIGEST).exists()
    # The first fetch was one GET, plus one resume attempt the upstream did not honour.
    assert len(fake.seen("GET", PATH)) <= 2
    gets = len(fake.seen("GET", PATH))
    await assert_broken(await client.get(PATH), BLOB)
    assert len(fake.seen("GET", PATH)) > gets, "the next request fetches again"


async def test_interrupted_fill_resumes_with_a_range_request(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """A body cut off half-way is resumed from where it broke; the client never notices."""
    fake = await make_fake_upstream()
    cut = len(BLOB) // 2
    fake.route(PATH, resumable_content(BLOB, cut))
    client = await make_mirror(fake)
    response = await client.get(PATH)
    assert response.status == 200
    assert await response.read() == BLOB
    gets = fake.seen("GET", PATH)
    assert len(gets) == 2
    resumed_from = int(gets[1].headers["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from <= cut
    assert await wait_until(lambda: cached_blob(cache_dir, DIGEST).exists())


async def test_range_on_a_blob_in_flight_is_answered_from_the_spool(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """A range already downloaded is served (206) at once, with no second upstream fetch."""
    fake, stall = await _stalling(make_fake_upstream)
    client = await make_mirror(fake)
    full = await _first_bytes(client)
    ranged = await client.get(PATH, headers={"Range": "bytes=1000-1999"})
    assert ranged.status == 206
    assert ranged.headers["Content-Range"] == f"bytes 1000-1999/{len(BLOB)}"
    assert await ranged.read() == BLOB[1000:2000]
    assert not stall.finished
    suffix = asyncio.ensure_future(client.get(PATH, headers={"Range": "bytes=-100"}))
    stall.resume.set()
    tail = await suffix
    assert tail.status == 206
    assert await tail.read() == BLOB[-100:]
    assert await full.read() == BLOB[1024:]
    assert len(fake.seen("GET", PATH)) == 1


async def test_unsatisfiable_range_on_a_blob_in_flight_is_416(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory
) -> None:
    """A range past the end is refused with the blob's size, as for a cached blob."""
    fake, stall = await _stalling(make_fake_upstream)
    stall.resume.set()
    client = await make_mirror(fake)
    response = await client.get(PATH, headers={"Range": f"bytes={len(BLOB) + 10}-"})
    assert response.status == 416
    assert response.headers["Content-Range"] == f"bytes */{len(BLOB)}"


async def test_two_instances_on_one_cache_dir_make_one_upstream_get(
    two: TwoInstances, cache_dir: Path
) -> None:
    """Workers or replicas sharing a cache directory fetch a blob once; the others tail it."""
    followers = await asyncio.gather(*(_first_bytes(two.second) for _ in range(5)))
    ranged = await two.second.get(PATH, headers={"Range": "bytes=10-19"})
    assert await ranged.read() == BLOB[10:20]
    two.stall.resume.set()
    for response in (two.leader, *followers):
        assert await response.read() == BLOB[1024:]
    assert len(two.fake.seen("GET", PATH)) == 1
    assert await wait_until(lambda: cached_blob(cache_dir, DIGEST).exists())
    assert cached_blob(cache_dir, DIGEST).read_bytes() == BLOB


async def test_followers_in_another_instance_fail_when_the_fill_fails(
    two: TwoInstances, cache_dir: Path
) -> None:
    """A fill that dies in one process aborts the clients tailing it from another."""
    follower = await _first_bytes(two.second)
    await two.first.close()  # the filling instance shuts down mid-fill
    two.stall.resume.set()
    for response in (two.leader, follower):
        try:
            body = await response.read()
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            continue
        raise AssertionError(f"clean end after {len(body)} bytes")
    assert await wait_until(lambda: spool_files(cache_dir) == []), spool_files(cache_dir)
    assert not cached_blob(cache_dir, DIGEST).exists()


async def test_instances_on_one_cache_dir_share_a_manifest_miss(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """Concurrent first pulls of a tag, or of a digest, in two instances make one GET."""
    fake = await make_fake_upstream()
    gate = asyncio.Event()
    paths = []
    for reference in ("v1", "by-digest"):
        body = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
        body += f'"annotations":{{"ref":"{reference}"}}}}'.encode()
        serve = content(body, "application/vnd.oci.image.manifest.v1+json")

        async def gated(request: web.Request, serve: Handler = serve) -> web.StreamResponse:
            await gate.wait()
            return await serve(request)

        path = f"/v2/lib/app/manifests/{reference if reference == 'v1' else sha256_digest(body)}"
        fake.route(path, gated)
        paths.append((path, body))
    clients = [await make_mirror(fake, cache_dir=cache_dir) for _ in range(2)]
    for path, body in paths:
        with structlog.testing.capture_logs() as logs:
            pending = [asyncio.ensure_future(c.get(path)) for c in clients for _ in range(3)]
            await asyncio.sleep(0.3)
            gate.set()
            for response in await asyncio.gather(*pending):
                assert response.status == 200
                assert await response.read() == body
        gate.clear()
        assert len(fake.seen("GET", path)) == 1, path
        # One request made the GET; the rest, in either instance, say they shared it.
        labels = sorted(e["cache"] for e in logs if e.get("event") == "request")
        assert labels == ["coalesced"] * 5 + ["miss"], path


async def test_head_of_a_blob_in_flight_is_answered_from_the_fill(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory
) -> None:
    """A probe of a blob being downloaded needs no upstream HEAD: the fill knows its size."""
    fake, stall = await _stalling(make_fake_upstream)
    client = await make_mirror(fake)
    full = await _first_bytes(client)
    head = await client.head(PATH)
    assert head.status == 200
    assert head.headers["Content-Length"] == str(len(BLOB))
    assert head.headers["Docker-Content-Digest"] == DIGEST
    assert fake.seen("HEAD", PATH) == []
    stall.resume.set()
    assert await full.read() == BLOB[1024:]


async def test_a_fill_another_instance_starts_after_a_look_found_none_is_joined(
    two: TwoInstances, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that looked for another process's fill of the blob just before that fill
    took its claim, and then got the route's claim once the other let it go, joins that fill:
    it asks the upstream for nothing, not even a download it would drop after the headers."""
    real_find = FollowedFill.find.__func__  # type: ignore[attr-defined]
    looks: list[bool] = []

    async def find_too_early(cls: type[FollowedFill], *args: Any) -> FollowedFill | None:
        looks.append(True)
        # The first look happened before the leader's claim: it found nothing.
        return None if len(looks) == 1 else await real_find(cls, *args)

    monkeypatch.setattr(FollowedFill, "find", classmethod(find_too_early))
    follower = await _first_bytes(two.second)
    two.stall.resume.set()
    for response in (two.leader, follower):
        assert await response.read() == BLOB[1024:]
    assert len(looks) >= 2
    assert len(two.fake.seen("GET", PATH)) == 1
