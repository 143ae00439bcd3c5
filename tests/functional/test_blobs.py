"""Blobs through the mirror: full bodies, HEAD, single and multiple ranges, unknown blobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import MirrorFactory, Seeded
from tests.support.oci import assert_oci_error, cached_blob, wait_until
from tests.support.registry import Registry


async def test_blob_get_returns_exact_bytes_with_digest_and_length(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """A miss streams the upstream bytes; the hit that follows serves the same bytes from disk."""
    repo, _ = seeded.schema2_ref
    client = await make_mirror(registry)
    for blob in seeded.schema2.blobs:
        for attempt in ("miss", "hit"):
            response = await client.get(f"/v2/{repo}/blobs/{blob.digest}")
            assert response.status == 200, attempt
            assert await response.read() == blob.data, attempt
            assert response.headers["Docker-Content-Digest"] == blob.digest
            assert response.headers["Content-Length"] == str(blob.size)
            assert "Content-Encoding" not in response.headers
        assert await wait_until(cached_blob(cache_dir, blob.digest).exists)
        assert cached_blob(cache_dir, blob.digest).read_bytes() == blob.data


async def test_multi_mib_layer_arrives_intact(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """A layer far larger than any read buffer is streamed whole, then served from the cache."""
    repo, _ = seeded.big_ref
    layer = seeded.big.layers[0]
    client = await make_mirror(registry)
    for attempt in ("miss", "hit"):
        response = await client.get(f"/v2/{repo}/blobs/{layer.digest}")
        assert response.status == 200, attempt
        assert await response.read() == layer.data, attempt
    assert await wait_until(lambda: cached_blob(cache_dir, layer.digest).exists())
    assert cached_blob(cache_dir, layer.digest).stat().st_size == layer.size


async def test_blob_head_of_cached_blob_has_length_digest_and_no_body(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """HEAD is how clients probe a blob before they pull it."""
    repo, _ = seeded.schema2_ref
    layer = seeded.schema2.layers[0]
    client = await make_mirror(registry)
    await (await client.get(f"/v2/{repo}/blobs/{layer.digest}")).read()
    head = await client.head(f"/v2/{repo}/blobs/{layer.digest}")
    assert head.status == 200
    assert head.headers["Content-Length"] == str(layer.size)
    assert head.headers["Docker-Content-Digest"] == layer.digest
    assert await head.read() == b""


async def test_blob_head_of_uncached_blob_is_answered_from_an_upstream_head(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """Chained caches probe with HEAD: a bare 404 would make them think the blob is missing."""
    repo, _ = seeded.oci_ref
    layer = seeded.oci.layers[0]
    client = await make_mirror(registry)
    registry.clear_requests()
    head = await client.head(f"/v2/{repo}/blobs/{layer.digest}")
    assert head.status == 200
    assert head.headers["Content-Length"] == str(layer.size)
    assert head.headers["Docker-Content-Digest"] == layer.digest
    path = f"/v2/{repo}/blobs/{layer.digest}"
    seen = registry.requests()
    assert ("HEAD", path) in seen
    assert ("GET", path) not in seen, "a HEAD must not download the blob"


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [
        ("bytes=500-1499", 500, 1499),
        ("bytes=100-", 100, None),
        ("bytes=-500", -500, None),
        ("bytes=2000-100000", 2000, None),
    ],
    ids=["closed", "open-ended", "suffix", "past-eof"],
)
async def test_single_range_on_cached_blob_is_206_with_content_range(
    make_mirror: MirrorFactory,
    registry: Registry,
    seeded: Seeded,
    range_header: str,
    start: int,
    end: int | None,
) -> None:
    """RFC 9110 §14: containerd and podman resume and parallelise with single ranges."""
    repo, _ = seeded.schema2_ref
    layer = seeded.schema2.layers[1]
    size = layer.size
    client = await make_mirror(registry)
    await (await client.get(f"/v2/{repo}/blobs/{layer.digest}")).read()
    first = size + start if start < 0 else start
    last = size - 1 if end is None else end
    response = await client.get(f"/v2/{repo}/blobs/{layer.digest}", headers={"Range": range_header})
    assert response.status == 206
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
    assert await response.read() == layer.data[first : last + 1]
    assert response.headers["Content-Length"] == str(last + 1 - first)


@pytest.mark.parametrize("range_header", ["bytes=500-0", "bytes=100000-200000"])
async def test_unsatisfiable_range_is_416(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, range_header: str
) -> None:
    """A range wholly past the end (or inverted) cannot be served."""
    repo, _ = seeded.schema2_ref
    layer = seeded.schema2.layers[1]
    client = await make_mirror(registry)
    await (await client.get(f"/v2/{repo}/blobs/{layer.digest}")).read()
    response = await client.get(f"/v2/{repo}/blobs/{layer.digest}", headers={"Range": range_header})
    assert response.status == 416


async def test_multi_range_gets_the_full_blob_never_416(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """podman's partial pulls send several ranges; 416 would fail them, a full 200 does not."""
    repo, _ = seeded.schema2_ref
    layer = seeded.schema2.layers[1]
    client = await make_mirror(registry)
    await (await client.get(f"/v2/{repo}/blobs/{layer.digest}")).read()
    response = await client.get(
        f"/v2/{repo}/blobs/{layer.digest}", headers={"Range": "bytes=0-1,5-6"}
    )
    assert response.status == 200
    assert await response.read() == layer.data


async def test_unknown_blob_is_blob_unknown(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded
) -> None:
    """A digest the upstream does not have is 404 BLOB_UNKNOWN, for GET and HEAD."""
    repo, _ = seeded.schema2_ref
    digest = "sha256:" + "1" * 64
    client = await make_mirror(registry)
    response = await client.get(f"/v2/{repo}/blobs/{digest}")
    await assert_oci_error(response, 404, "BLOB_UNKNOWN")
    head = await client.head(f"/v2/{repo}/blobs/{digest}")
    assert head.status == 404
