"""The bucket's cap (`[storage] max_size`) is one cap for every replica on the bucket: past it,
the least recently used images go from the bucket, recency being the hits any replica recorded
in Redis, and one process per interval does the work."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from mirror.app import create_app
from mirror.cache.bucket_cap import CALM_FOR, BucketCap
from mirror.cache.eviction import Freed
from mirror.config import S3Settings, Settings, UpstreamSettings
from mirror.meta.redis import RedisStore
from mirror.storage.s3.bucket import open_bucket
from mirror.storage.shared_blobs import HELD_FOR
from tests.support.images import Image, make_image, push_image, sha256_digest
from tests.support.oci import wait_until
from tests.support.redis_server import RedisServer
from tests.support.registry import Registry
from tests.support.seaweed import BUCKET, Seaweed

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
LAYER = 1 << 20
WITHIN = 60.0


def replica(
    upstream: str, cache_dir: Path, redis: RedisServer, prefix: str, bucket: S3Settings
) -> Settings:
    return Settings(
        cache_dir=cache_dir,
        upstreams=(UpstreamSettings(default=True, url=upstream),),
        redis_url=redis.url,
        redis_prefix=prefix,
        storage=bucket,
    )


def new_image() -> Image:
    return make_image(layer_sizes=(LAYER,), seed=uuid.uuid4().hex)


def in_bucket(seaweed: Seaweed, bucket: S3Settings, image: Image) -> dict[str, bool]:
    """Which of the image's objects the bucket holds, by key."""
    keys = seaweed.keys(bucket.prefix)
    wanted = [f"manifests/sha256/{image.digest[7:]}"]
    wanted += [f"blobs/sha256/{blob.digest[7:]}" for blob in image.blobs]
    return {key: key in keys for key in wanted}


async def pull(client: TestClient[Any, Any], repo: str, image: Image) -> None:
    """Pull the image by tag: its manifest and its blobs."""
    answer = await client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": image.media_type})
    assert answer.status == 200, await answer.text()
    for blob in image.blobs:
        body = await (await client.get(f"/v2/{repo}/blobs/{blob.digest}")).read()
        assert sha256_digest(body) == blob.digest


async def test_past_the_cap_the_image_no_replica_used_lately_leaves_the_bucket(
    aiohttp_client: ClientFactory,
    registry: Registry,
    redis_server: RedisServer,
    seaweed: Seaweed,
    tmp_path: Path,
) -> None:
    """Three images stored through one replica, the one no replica uses again last; then one
    is pulled again through that replica and another through a second replica. Past the cap,
    the one no replica used since goes from the bucket (its tag, manifest and blobs) and the two
    used stay; a second process looking within the same interval does nothing; a fresh replica
    fetches the evicted image from the upstream again and serves the others from the bucket."""
    bucket = seaweed.settings()
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    images = {f"cap/{uuid.uuid4().hex[:8]}": new_image() for _ in range(3)}
    for repo, image in images.items():
        push_image(registry.url, repo, "v1", image)
    (used_here, evicted, used_there) = images
    first = await aiohttp_client(
        create_app(replica(registry.url, tmp_path / "a", redis_server, prefix, bucket))
    )

    def uploaded(repos: tuple[str, ...]) -> bool:
        return all(all(in_bucket(seaweed, bucket, images[repo]).values()) for repo in repos)

    # The image to go is stored last: by the bucket's own dates, it would be the one to stay.
    for batch in ((used_here, used_there), (evicted,)):
        for repo in batch:
            await pull(first, repo, images[repo])
        assert await wait_until(lambda b=batch: uploaded(b), within=WITHIN)
        await asyncio.sleep(1.1)  # the bucket dates objects to the second
    second = await aiohttp_client(
        create_app(replica(registry.url, tmp_path / "b", redis_server, prefix, bucket))
    )
    await pull(first, used_here, images[used_here])
    await pull(second, used_there, images[used_there])

    keys = seaweed.keys(bucket.prefix)
    stored = sum(size for key, size in keys.items() if key.startswith(("blobs/", "manifests/")))
    async with open_bucket(bucket) as handle:
        stores = [RedisStore(redis_server.url, prefix) for _ in range(2)]
        caps = [BucketCap(handle, s, stored - LAYER // 2, 0.0, ()) for s in stores]
        try:
            # Each replica writes its hits to Redis within a second.
            await asyncio.sleep(1.5)
            freed = await caps[0].check()
            assert freed is not None and freed.images == 1
            assert await caps[1].check() is None
        finally:
            for store in stores:
                await store.close()

    keys = seaweed.keys(bucket.prefix)
    for repo, image in images.items():
        held = [*in_bucket(seaweed, bucket, image).values()]
        held.append(any(key.endswith(f"{repo}/_tags/v1") for key in keys))
        assert held == [repo != evicted] * len(held), repo

    fresh = await aiohttp_client(
        create_app(replica(registry.url, tmp_path / "c", redis_server, prefix, bucket))
    )
    registry.clear_requests()
    for repo, image in images.items():
        await pull(fresh, repo, image)
    fetched = {path for method, path in registry.requests() if method == "GET"}
    # The tag is still fresh in Redis: its manifest is fetched by the digest it names.
    assert fetched == {
        f"/v2/{evicted}/manifests/{images[evicted].digest}",
        *(f"/v2/{evicted}/blobs/{blob.digest}" for blob in images[evicted].blobs),
    }


async def test_within_the_cap_nothing_is_removed(
    aiohttp_client: ClientFactory,
    registry: Registry,
    redis_server: RedisServer,
    seaweed: Seaweed,
    tmp_path: Path,
) -> None:
    """A bucket within its cap is looked at and left as it is. Past half its cap it is looked
    at again once the interval has passed; under half, ten intervals later."""
    bucket = seaweed.settings()
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    repo, image = f"cap/{uuid.uuid4().hex[:8]}", new_image()
    push_image(registry.url, repo, "v1", image)
    client = await aiohttp_client(
        create_app(replica(registry.url, tmp_path / "a", redis_server, prefix, bucket))
    )
    await pull(client, repo, image)
    assert await wait_until(lambda: all(in_bucket(seaweed, bucket, image).values()), WITHIN)

    def content() -> dict[str, int]:
        """The bucket's objects but uploads under way."""
        keys = seaweed.keys(bucket.prefix)
        return {key: size for key, size in keys.items() if not key.startswith("uploads/")}

    before = content()
    stored = sum(size for key, size in before.items() if not key.startswith("tags/"))
    every = 0.2
    async with open_bucket(bucket) as handle:
        store = RedisStore(redis_server.url, prefix)
        try:
            near = BucketCap(handle, store, stored + 1, 0.0, (), every=every)
            assert await near.check() == Freed()
            await asyncio.sleep(every * 1.5)
            assert await near.check() == Freed()
            await asyncio.sleep(every * 1.5)
            far = BucketCap(handle, store, 10 * stored, 0.0, (), every=every)
            assert await far.check() == Freed()
            await asyncio.sleep(every * 1.5)
            assert await far.check() is None
            await asyncio.sleep(every * CALM_FOR)
            assert await far.check() == Freed()
        finally:
            await store.close()
    assert content() == before


async def test_a_blob_the_bucket_lost_while_a_replica_serves_it_is_uploaded_again(
    aiohttp_client: ClientFactory, registry: Registry, seaweed: Seaweed, tmp_path: Path
) -> None:
    """A blob gone from the bucket (evicted by its cap, or removed by an operator) while a
    replica serves it from its cache directory is looked for again once HELD_FOR has passed,
    and uploaded: content in use belongs in the shared cache. Within that time, hits do not
    ask the bucket."""
    bucket = seaweed.settings()
    now = [time.time()]
    settings = Settings(
        cache_dir=tmp_path / "a",
        upstreams=(UpstreamSettings(default=True, url=registry.url),),
        storage=bucket,
    )
    client = await aiohttp_client(create_app(settings, clock=lambda: now[0]))
    repo, image = f"cap/{uuid.uuid4().hex[:8]}", new_image()
    push_image(registry.url, repo, "v1", image)
    await pull(client, repo, image)
    key = f"blobs/sha256/{image.layers[0].digest[7:]}"
    assert await wait_until(lambda: all(in_bucket(seaweed, bucket, image).values()), WITHIN)
    seaweed.client.delete_object(Bucket=BUCKET, Key=f"{bucket.prefix}/{key}")

    now[0] += 60.0
    await pull(client, repo, image)
    await asyncio.sleep(0.5)  # time enough for an upload of this size, were one started
    assert key not in seaweed.keys(bucket.prefix)
    now[0] += HELD_FOR
    await pull(client, repo, image)
    assert await wait_until(lambda: key in seaweed.keys(bucket.prefix), WITHIN)
