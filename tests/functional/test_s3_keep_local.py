"""`[storage] keep_local = false`: the cache directory in front of the bucket keeps no blob the
bucket holds, for replicas on small or short-lived disks; every byte is still verified, and
hits come from the bucket, never from the upstream."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from mirror.app import create_app
from mirror.config import Settings, UpstreamSettings
from tests.support.images import make_image, push_image, sha256_digest
from tests.support.oci import cached_blob, cached_manifest, wait_until
from tests.support.registry import Registry
from tests.support.seaweed import Seaweed

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
WITHIN = 60.0


async def test_the_directory_keeps_no_blob_the_bucket_holds(
    aiohttp_client: ClientFactory, registry: Registry, seaweed: Seaweed, tmp_path: Path
) -> None:
    """A pulled image's blobs leave the cache directory once they are in the bucket (its
    manifest stays); pulled again, they come verified from the bucket with no upstream
    request, and are not copied back to the directory."""
    bucket = seaweed.settings(keep_local=False)
    cache = tmp_path / "cache"
    settings = Settings(
        cache_dir=cache,
        upstreams=(UpstreamSettings(default=True, url=registry.url),),
        storage=bucket,
    )
    client = await aiohttp_client(create_app(settings))
    repo = f"local/{uuid.uuid4().hex[:8]}"
    image = make_image(layer_sizes=(1 << 20, 4096), seed=uuid.uuid4().hex)
    push_image(registry.url, repo, "v1", image)

    async def pull() -> None:
        answer = await client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": image.media_type})
        assert await answer.read() == image.manifest
        for blob in image.blobs:
            body = await (await client.get(f"/v2/{repo}/blobs/{blob.digest}")).read()
            assert sha256_digest(body) == blob.digest

    await pull()
    keys = [f"blobs/sha256/{blob.digest[7:]}" for blob in image.blobs]

    def moved() -> bool:
        held = seaweed.keys(bucket.prefix)
        return all(key in held for key in keys) and not any(
            cached_blob(cache, blob.digest).exists() for blob in image.blobs
        )

    assert await wait_until(moved, within=WITHIN)
    assert cached_manifest(cache, image.digest).exists()
    registry.clear_requests()
    await pull()
    assert [path for method, path in registry.requests() if method == "GET"] == []
    await asyncio.sleep(0.5)  # a copy down would have begun by now
    assert not any(cached_blob(cache, blob.digest).exists() for blob in image.blobs)
    assert not any((cache / "spool").iterdir())
