"""Connection pools: blob downloads cannot starve manifests, a full pool fails instead of
hanging, the pools share idle connections, and what a caller raises while reading an answer is
not the upstream's failure."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from mirror.config import Settings, UpstreamSettings
from mirror.errors import UpstreamError
from mirror.meta.store import EmbeddedStore
from mirror.oci.digest import Digest
from mirror.upstream.registry import UpstreamRegistry
from tests.conftest import MirrorFromSettings
from tests.faults import (
    FakeFactory,
    FakeUpstream,
    Stall,
    bearer_auth,
    content,
    dying_content,
    error,
    redirect,
    slow_content,
    token_endpoint,
)
from tests.support.images import make_image, sha256_digest
from tests.support.oci import ACCEPT_ALL, assert_oci_error

# Generous: these waits only tell "answered" from "hangs forever", never measure speed.
HANG = 30.0


async def test_stalled_downloads_filling_the_blob_pool_do_not_hold_up_manifests(
    make_fake_upstream: FakeFactory, mirror_from: MirrorFromSettings, cache_dir: Path
) -> None:
    """With every blob connection stalled, a manifest is still fetched; one blob more fails
    with 503 (after the pool's wait, not never), and the breaker stays closed."""
    fake = await make_fake_upstream()
    image = make_image(seed="pools-manifest")
    for reference in ("v1", "v2", image.digest):
        fake.route(f"/v2/lib/app/manifests/{reference}", content(image.manifest, image.media_type))
    stalls = [Stall(), Stall()]
    blobs = [f"stalled layer {i} ".encode() * 4096 for i in range(3)]
    for blob, stall in zip(blobs, [*stalls, Stall()], strict=True):
        fake.route(f"/v2/lib/app/blobs/{sha256_digest(blob)}", slow_content(blob, stall))
    upstream = UpstreamSettings(
        url=fake.url, default=True, max_connections=2, connect_timeout=1.0, breaker_failures=1
    )
    client = await mirror_from(Settings(cache_dir=cache_dir, upstreams=(upstream,)))
    downloads = [await client.get(f"/v2/lib/app/blobs/{sha256_digest(blob)}") for blob in blobs[:2]]
    for stall in stalls:
        await asyncio.wait_for(stall.first_sent.wait(), HANG)

    manifest = await asyncio.wait_for(
        client.get("/v2/lib/app/manifests/v1", headers={"Accept": ACCEPT_ALL}), HANG
    )
    assert manifest.status == 200, await manifest.text()
    assert await manifest.read() == image.manifest

    third = await asyncio.wait_for(client.get(f"/v2/lib/app/blobs/{sha256_digest(blobs[2])}"), HANG)
    document = await assert_oci_error(third, 503, "UNAVAILABLE")
    assert "busy" in document["errors"][0]["message"]
    again = await client.get("/v2/lib/app/manifests/v2", headers={"Accept": ACCEPT_ALL})
    assert again.status == 200, "a full blob pool opened the circuit breaker"
    assert len(fake.seen("GET", "/v2/lib/app/manifests/v2")) == 1

    for stall in stalls:
        stall.resume.set()
    for download, blob in zip(downloads, blobs[:2], strict=True):
        assert download.status == 200
        assert await download.read() == blob


async def test_the_first_blob_of_a_pull_reuses_the_connection_of_its_manifest(
    make_fake_upstream: FakeFactory, mirror_from: MirrorFromSettings, cache_dir: Path
) -> None:
    """The pools share their idle connections: a blob asked for right after its manifest goes
    out on the manifest's connection, with no new handshake before the client's first byte."""
    fake = await make_fake_upstream()
    image = make_image(seed="pools-reuse")
    layer = image.layers[0]
    fake.route("/v2/lib/app/manifests/v1", content(image.manifest, image.media_type))
    fake.route(f"/v2/lib/app/blobs/{layer.digest}", content(layer.data))
    upstream = UpstreamSettings(url=fake.url, default=True)
    client = await mirror_from(Settings(cache_dir=cache_dir, upstreams=(upstream,)))
    manifest = await client.get("/v2/lib/app/manifests/v1", headers={"Accept": ACCEPT_ALL})
    assert await manifest.read() == image.manifest
    blob = await client.get(f"/v2/lib/app/blobs/{layer.digest}")
    assert await blob.read() == layer.data
    (manifest_request,) = fake.seen("GET", "/v2/lib/app/manifests/v1")
    (blob_request,) = fake.seen("GET", f"/v2/lib/app/blobs/{layer.digest}")
    assert blob_request.connection == manifest_request.connection


@pytest.fixture
async def registry(make_fake_upstream: FakeFactory) -> tuple[UpstreamRegistry, FakeUpstream]:
    """An upstream client on its own (no app), over a fake upstream; one failure opens the
    breaker, so a single miscounted failure shows."""
    fake = await make_fake_upstream()
    settings = UpstreamSettings(url=fake.url, breaker_failures=1, read_timeout=2.0)
    return UpstreamRegistry(settings, EmbeddedStore(), user_agent="test"), fake


BLOB = b"a layer the caller reads " * 1000
DIGEST = Digest.parse(sha256_digest(BLOB))


async def test_what_the_caller_raises_while_reading_is_not_an_upstream_failure(
    registry: tuple[UpstreamRegistry, FakeUpstream],
) -> None:
    """A caller's own TimeoutError or OSError comes out as it went in; the breaker stays shut."""
    upstream, fake = registry
    fake.route(f"/v2/lib/app/blobs/{DIGEST}", content(BLOB))
    try:
        for own in (TimeoutError("the caller's deadline"), OSError(28, "No space left")):
            with pytest.raises(type(own)) as raised:
                async with upstream.open_blob("lib/app", DIGEST) as resp:
                    await resp.content.read(10)
                    raise own
            assert raised.value is own
            assert not await upstream.health.is_open(), f"{own!r} counted as upstream failure"
        async with upstream.open_blob("lib/app", DIGEST) as resp:
            assert await resp.read() == BLOB, "the pool slots were given back"
    finally:
        await upstream.close()


async def test_a_body_that_breaks_off_is_still_the_upstreams_failure(
    registry: tuple[UpstreamRegistry, FakeUpstream],
) -> None:
    """aiohttp's own error while the caller reads becomes an UpstreamError."""
    upstream, fake = registry
    fake.route(f"/v2/lib/app/blobs/{DIGEST}", dying_content(BLOB))
    try:
        with pytest.raises(UpstreamError):
            async with upstream.open_blob("lib/app", DIGEST) as resp:
                await resp.read()
    finally:
        await upstream.close()


async def test_the_auth_layer_hands_back_any_final_answer_after_redirects_and_a_challenge(
    registry: tuple[UpstreamRegistry, FakeUpstream], make_fake_upstream: FakeFactory
) -> None:
    """`authorized` alone: a redirect to an origin that challenges, answered anonymously; the
    final 404 comes back as it is, for the bookkeeping layer to judge."""
    upstream, fake = registry
    region = await make_fake_upstream()
    path = "/v2/lib/app/manifests/v1"
    fake.route(path, redirect(f"{region.url}{path}"))
    region.route("/token", token_endpoint("regional"))
    scope = "repository:lib/app:pull"
    region.route(path, bearer_auth(f"{region.url}/token", "r", "regional", scope, missing))
    client = upstream.client
    try:
        exchange = await client.authorized(
            client.api, "GET", client.url("lib/app", "manifests/v1"), {}, "lib/app"
        )
        try:
            assert exchange.response.status == 404
            assert str(exchange.response.url) == f"{region.url}{path}"
        finally:
            exchange.close()
        assert [r.headers.get("Authorization") for r in region.seen("GET", path)] == [
            None,
            "Bearer regional",
        ]
        assert not await upstream.health.is_open()
    finally:
        await upstream.close()


async def missing(request: web.Request) -> web.StreamResponse:
    return error(404, "MANIFEST_UNKNOWN")
