"""Every blob answer alike, cached or in flight: the digest as ETag, ranges as RFC 9110 says."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import MirrorFactory
from tests.faults import FakeFactory, Stall, content, slow_content
from tests.support.images import sha256_digest
from tests.support.oci import assert_oci_error, cached_blob, wait_until

BLOB = hashlib.sha256(b"answers").digest() * (256 * 1024 // 32)  # 256 KiB
DIGEST = sha256_digest(BLOB)
ETAG = f'"{DIGEST}"'
PATH = f"/v2/lib/answers/blobs/{DIGEST}"
FIRST = 64 * 1024  # what the slow upstream sends before it stalls


@dataclass
class Blob:
    """A mirror holding BLOB either in its cache or half-way through its download."""

    client: TestClient[Any, Any]
    stall: Stall
    held: aiohttp.ClientResponse | None  # the download keeping the blob in flight

    def finish(self) -> None:
        """Let the upstream send the rest, so answers that need every byte can end."""
        self.stall.resume.set()


@pytest.fixture(params=["cached", "in flight"])
async def blob(
    request: pytest.FixtureRequest,
    make_mirror: MirrorFactory,
    make_fake_upstream: FakeFactory,
    cache_dir: Path,
) -> AsyncIterator[Blob]:
    """The blob in the state the parameter names."""
    fake = await make_fake_upstream()
    stall = Stall()
    held = None
    if request.param == "cached":
        fake.route(PATH, content(BLOB))
        client = await make_mirror(fake)
        assert await (await client.get(PATH)).read() == BLOB
        assert await wait_until(cached_blob(cache_dir, DIGEST).exists)
    else:
        fake.route(PATH, slow_content(BLOB, stall, first=FIRST))
        client = await make_mirror(fake)
        held = await client.get(PATH)
        assert await held.content.readexactly(1024) == BLOB[:1024]
    yield Blob(client, stall, held)
    stall.resume.set()
    if held is not None:
        held.close()


async def test_every_blob_answer_has_the_digest_etag_and_accepts_ranges(blob: Blob) -> None:
    """GET and HEAD carry `ETag: "<digest>"` and `Accept-Ranges: bytes`, whatever the source."""
    head = await blob.client.head(PATH)
    get = await blob.client.get(PATH)
    for response in (head, get):
        assert response.status == 200
        assert response.headers["ETag"] == ETAG
        assert response.headers["Accept-Ranges"] == "bytes"
        assert response.headers["Docker-Content-Digest"] == DIGEST
        assert response.headers["Content-Length"] == str(len(BLOB))
    blob.finish()
    assert await get.read() == BLOB


async def test_head_of_an_uncached_blob_accepts_ranges_too(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory
) -> None:
    """A HEAD answered from the upstream's HEAD has the same headers as any other blob answer."""
    fake = await make_fake_upstream()
    fake.route(PATH, content(BLOB))
    client = await make_mirror(fake)
    head = await client.head(PATH)
    assert head.status == 200
    assert head.headers["ETag"] == ETAG
    assert head.headers["Accept-Ranges"] == "bytes"
    assert fake.seen("GET", PATH) == []


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("validator", [ETAG, DIGEST, f'"sha256:{"0" * 64}", W/{ETAG}', "*"])
async def test_if_none_match_naming_the_blob_is_304(
    blob: Blob, method: str, validator: str
) -> None:
    """A client that holds the blob is told so without a body (distribution answers 304)."""
    response = await blob.client.request(method, PATH, headers={"If-None-Match": validator})
    assert response.status == 304
    assert response.headers["ETag"] == ETAG
    assert await response.read() == b""


async def test_if_none_match_naming_another_blob_gets_the_blob(blob: Blob) -> None:
    """Another digest is not this blob: the whole body follows."""
    other = f'"sha256:{"0" * 64}"'
    response = await blob.client.get(PATH, headers={"If-None-Match": other})
    assert response.status == 200
    blob.finish()
    assert await response.read() == BLOB


async def test_a_zero_length_suffix_range_is_unsatisfiable(blob: Blob) -> None:
    """`bytes=-0` selects no byte (RFC 9110 §14.1.3): 416 naming the size, never the whole blob."""
    response = await blob.client.get(PATH, headers={"Range": "bytes=-0"})
    await assert_oci_error(response, 416, "RANGE_INVALID")
    assert response.headers["Content-Range"] == f"bytes */{len(BLOB)}"


@pytest.mark.parametrize("range_header", ["items=0-1", "pages=1", "Bytes0-1"])
async def test_a_range_unit_other_than_bytes_is_ignored(blob: Blob, range_header: str) -> None:
    """RFC 9110 §14.2: a range unit the server does not know is ignored, so the answer is 200."""
    response = await blob.client.get(PATH, headers={"Range": range_header})
    assert response.status == 200
    assert "Content-Range" not in response.headers
    blob.finish()
    assert await response.read() == BLOB


async def test_a_range_unit_is_case_insensitive(blob: Blob) -> None:
    """`BYTES=0-9` is a bytes range (RFC 9110 §14.1)."""
    response = await blob.client.get(PATH, headers={"Range": "BYTES=0-9"})
    assert response.status == 206
    assert await response.read() == BLOB[:10]


@pytest.mark.parametrize(
    ("if_range", "status"), [(ETAG, 206), ('"other"', 200), ("W/" + ETAG, 200)]
)
async def test_if_range_honours_the_range_only_for_this_blob(
    blob: Blob, if_range: str, status: int
) -> None:
    """RFC 9110 §13.1.5: the range applies only when `If-Range` is this blob's (strong) ETag."""
    headers = {"Range": "bytes=0-9", "If-Range": if_range}
    response = await blob.client.get(PATH, headers=headers)
    assert response.status == status
    blob.finish()
    assert await response.read() == (BLOB[:10] if status == 206 else BLOB)


async def test_sendfile_sends_full_segments_and_holds_back_nothing_it_sent(blob: Blob) -> None:
    """Each sendfile runs corked (TCP_CORK: full segments only, as nginx's `tcp_nopush`), and the
    cork is lifted as soon as it returns: the bytes of a blob still in flight do not wait for
    its next piece, and the connection's next answer does not wait behind the cork."""
    loop = asyncio.get_running_loop()
    real = loop.sendfile
    corked: list[int] = []
    sockets: list[Any] = []

    async def spy(transport: Any, file: Any, offset: int = 0, count: int | None = None) -> int:
        sock = transport.get_extra_info("socket")
        sockets.append(sock)
        corked.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK))
        return int(await real(transport, file, offset, count))

    def all_uncorked() -> bool:
        return bool(sockets) and all(
            s.fileno() < 0 or s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
            for s in sockets
        )

    loop.sendfile = spy  # type: ignore[method-assign,assignment]
    try:
        response = await blob.client.get(PATH)
        assert response.status == 200
        # In flight, the mirror has sent what the upstream has so far, and now waits for more.
        assert await response.content.readexactly(1024) == BLOB[:1024]
        assert await wait_until(all_uncorked), "the cork outlived a sendfile"
        blob.finish()
        assert BLOB[:1024] + await response.read() == BLOB
    finally:
        loop.sendfile = real  # type: ignore[method-assign]
    assert corked and set(corked) == {1}, corked
    assert await wait_until(all_uncorked), "the cork outlived the answer"
