"""Upstream faults: slow, dying, lying, throttling and hung upstreams, with nothing cached."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import MirrorFactory
from tests.faults import (
    FakeFactory,
    Handler,
    Stall,
    content,
    dying_content,
    hanging,
    lying_content,
    slow_content,
    status,
)
from tests.support.images import make_image, sha256_digest
from tests.support.oci import (
    ACCEPT_ALL,
    assert_broken,
    assert_oci_error,
    cached_blob,
    spool_files,
    wait_until,
)

BLOB = bytes(range(256)) * 1024  # 256 KiB
DIGEST = sha256_digest(BLOB)
BLOB_PATH = f"/v2/lib/faulty/blobs/{DIGEST}"


async def test_slow_upstream_first_bytes_reach_the_client_before_upstream_finishes(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """Streaming, not store-and-forward: containerd gives up on headers that take too long."""
    fake = await make_fake_upstream()
    stall = Stall()
    fake.route(BLOB_PATH, slow_content(BLOB, stall, first=64 * 1024))
    client = await make_mirror(fake)
    try:
        response = await asyncio.wait_for(client.get(BLOB_PATH), timeout=3)
        assert response.status == 200
        assert response.headers["Docker-Content-Digest"] == DIGEST
        first = await asyncio.wait_for(response.content.readexactly(1024), timeout=3)
    except TimeoutError:
        pytest.fail("no bytes reached the client while the upstream was still sending")
    assert first == BLOB[:1024]
    assert not stall.finished
    stall.resume.set()
    rest = await response.read()
    assert first + rest == BLOB
    assert stall.finished
    assert await wait_until(lambda: cached_blob(cache_dir, DIGEST).exists())
    assert cached_blob(cache_dir, DIGEST).read_bytes() == BLOB


async def test_upstream_death_mid_stream_aborts_the_client_and_caches_nothing(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """A short body must never pass for a whole one, nor be kept; the next request refetches."""
    fake = await make_fake_upstream()
    fake.route(BLOB_PATH, dying_content(BLOB))
    client = await make_mirror(fake)
    await assert_broken(await client.get(BLOB_PATH), BLOB)
    assert await wait_until(lambda: spool_files(cache_dir) == []), spool_files(cache_dir)
    assert not cached_blob(cache_dir, DIGEST).exists()

    fake.route(BLOB_PATH, content(BLOB))
    gets_before = len(fake.seen("GET", BLOB_PATH))
    response = await client.get(BLOB_PATH)
    assert response.status == 200
    assert await response.read() == BLOB
    assert len(fake.seen("GET", BLOB_PATH)) == gets_before + 1
    assert await wait_until(lambda: cached_blob(cache_dir, DIGEST).exists())


async def test_a_fill_that_fails_in_an_unexpected_way_still_ends_its_client(
    make_mirror: MirrorFactory,
    make_fake_upstream: FakeFactory,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fault in the fill that nothing expects (a bug) breaks the client's transfer off
    rather than leaving it waiting for bytes that never come; the next request fetches again."""
    from mirror.pullthrough import fills

    def fault(fd: int) -> None:
        raise RuntimeError("a fault nothing expects")

    fake = await make_fake_upstream()
    fake.route(BLOB_PATH, content(BLOB))
    client = await make_mirror(fake)
    monkeypatch.setattr(fills, "mark_verified", fault)
    await asyncio.wait_for(assert_broken(await client.get(BLOB_PATH), BLOB), 30)
    assert await wait_until(lambda: spool_files(cache_dir) == []), spool_files(cache_dir)
    assert not cached_blob(cache_dir, DIGEST).exists()

    monkeypatch.undo()
    response = await client.get(BLOB_PATH)
    assert response.status == 200
    assert await response.read() == BLOB
    assert await wait_until(lambda: cached_blob(cache_dir, DIGEST).exists())


async def test_wrong_bytes_for_a_digest_abort_the_client_and_cache_nothing(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """Digests are verified before anything is kept, and a bad body is never ended cleanly."""
    fake = await make_fake_upstream()
    impostor = bytes(reversed(BLOB))
    fake.route(BLOB_PATH, lying_content(impostor, claimed_digest=DIGEST))
    client = await make_mirror(fake)
    response = await client.get(BLOB_PATH)
    if response.status == 200:
        try:
            body = await response.read()
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            pass
        else:
            pytest.fail(f"a body that does not match its digest ended cleanly ({len(body)} bytes)")
    else:
        assert 500 <= response.status < 600 or response.status == 400
    assert await wait_until(lambda: spool_files(cache_dir) == []), spool_files(cache_dir)
    assert not cached_blob(cache_dir, DIGEST).exists()
    # Nothing was cached, so a second request goes upstream again rather than serving bad bytes.
    second = await client.get(BLOB_PATH)
    if second.status == 200:
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)):
            await second.read()
    assert len(fake.seen("GET", BLOB_PATH)) >= 2


async def test_wrong_manifest_bytes_for_a_digest_are_refused(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """A manifest fetched by digest must hash to that digest, or it is not served or kept."""
    real = make_image(seed="manifest-real")
    other = make_image(seed="manifest-other")
    fake = await make_fake_upstream()
    path = f"/v2/lib/faulty/manifests/{real.digest}"
    fake.route(path, lying_content(other.manifest, claimed_digest=real.digest))
    client = await make_mirror(fake)
    response = await client.get(path, headers={"Accept": ACCEPT_ALL})
    body = await response.read()
    assert response.status >= 400 and response.status != 500, (response.status, body[:200])
    assert body != other.manifest
    assert not list((cache_dir / "manifests").rglob(real.digest.split(":")[1]))


@pytest.mark.parametrize(
    ("code", "oci_code", "expected"),
    [
        (429, "TOOMANYREQUESTS", (429,)),
        (500, "UNKNOWN", (502, 503)),
        (502, "UNAVAILABLE", (502, 503)),
        (503, "UNAVAILABLE", (503,)),
    ],
)
@pytest.mark.parametrize("kind", ["tag", "blob"])
async def test_throttled_or_failing_upstream_with_nothing_cached_is_an_oci_error(
    make_mirror: MirrorFactory,
    make_fake_upstream: FakeFactory,
    code: int,
    oci_code: str,
    expected: tuple[int, ...],
    kind: str,
) -> None:
    """Upstream trouble becomes 429 TOOMANYREQUESTS or 502/503, never a 500 or a traceback; a
    429 or 503 passes on how long to wait."""
    fake = await make_fake_upstream()
    path = "/v2/lib/flaky/manifests/v1" if kind == "tag" else BLOB_PATH
    fake.route(path, status(code, oci_code, {"Retry-After": "30"}))
    client = await make_mirror(fake)
    response = await client.get(path, headers={"Accept": ACCEPT_ALL})
    codes = ("TOOMANYREQUESTS",) if code == 429 else ("UNAVAILABLE", "UNKNOWN")
    assert response.status in expected, (response.status, await response.text())
    await assert_oci_error(response, response.status, *codes)
    if code in (429, 503):
        assert response.headers.get("Retry-After") == "30"


@pytest.mark.parametrize("kind", ["tag", "blob", "blob-head"])
async def test_hung_upstream_gets_the_client_an_answer_within_the_read_timeout(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, kind: str
) -> None:
    """A connection that never answers must not hang the client: a gateway error, quickly."""
    fake = await make_fake_upstream()
    path = "/v2/lib/hung/manifests/v1" if kind == "tag" else BLOB_PATH
    fake.route(path, hanging(fake))
    read_timeout = 1.0
    client = await make_mirror(fake, read_timeout=read_timeout, connect_timeout=1.0)
    method = "HEAD" if kind == "blob-head" else "GET"
    started = time.monotonic()
    response: Any = await asyncio.wait_for(
        client.request(method, path, headers={"Accept": ACCEPT_ALL}), timeout=read_timeout * 6
    )
    elapsed = time.monotonic() - started
    assert response.status in (502, 503, 504), response.status
    if method == "GET":
        await assert_oci_error(response, response.status, "UNAVAILABLE", "UNKNOWN")
    assert elapsed < read_timeout * 4, f"answered after {elapsed:.1f}s"


def _chunked(data: bytes) -> Handler:
    """A blob body with no Content-Length (chunked), as some registries send."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(data)
        await response.write_eof()
        return response

    return handler


async def test_a_chunked_body_longer_than_the_blob_never_ends_cleanly_and_is_not_kept(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, cache_dir: Path
) -> None:
    """A body of no announced length that runs past the blob's bytes: the client's body
    breaks off (it never ends cleanly on bytes that are not the blob), nothing is kept."""
    fake = await make_fake_upstream()
    fake.route(BLOB_PATH, _chunked(BLOB + b"\0" * (4 << 20)))
    client = await make_mirror(fake)
    response = await client.get(BLOB_PATH)
    assert "Content-Length" not in response.headers
    await assert_broken(response, BLOB)
    assert await wait_until(lambda: spool_files(cache_dir) == []), spool_files(cache_dir)
    assert not cached_blob(cache_dir, DIGEST).exists()
