"""The bucket's inventory (`scan_bucket`), on a real SeaweedFS filled by a real mirror from a real
registry: the same images, sizes and links the cache directory's scan finds, last use from the
metadata store's record, and manifests read once."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from cachetools import LRUCache

from mirror.app import create_app
from mirror.cache.eviction import Policy, Sweeper, evict
from mirror.cache.inventory import Inventory, KnownLinks, Scanner, Stores
from mirror.commands.ls import rows
from mirror.config import S3Settings, Settings, UpstreamSettings
from mirror.oci.digest import Digest
from mirror.storage.s3.bucket import open_bucket
from mirror.storage.s3.inventory import scan_bucket
from tests.conftest import Seeded
from tests.support.cache import pull_image
from tests.support.oci import ACCEPT_ALL
from tests.support.registry import Registry
from tests.support.seaweed import BUCKET, Seaweed

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


class RecordedUse:
    """A `Recency` that knows the uses it is given and records what it was asked."""

    def __init__(self, used: dict[Digest, float]) -> None:
        self.used = used
        self.asked: set[Digest] = set()

    async def last_used(self, digests: Collection[Digest]) -> dict[Digest, float]:
        self.asked |= set(digests)
        return {d: self.used[d] for d in digests if d in self.used}


async def fill(
    aiohttp_client: ClientFactory,
    registry: Registry,
    seeded: Seeded,
    storage: S3Settings,
    cache_dir: Path,
) -> None:
    """Pull the schema 2 image and the amd64 image of the index by tag through a mirror keeping
    content in the bucket; return once its uploads are done."""
    settings = Settings(
        cache_dir=cache_dir,
        upstreams=(UpstreamSettings(default=True, url=registry.url),),
        storage=storage,
    )
    client = await aiohttp_client(create_app(settings))
    await pull_image(client, *seeded.schema2_ref, seeded.schema2)
    repo, tag = seeded.index_ref
    response = await client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL})
    assert await response.read() == seeded.index.manifest
    await pull_image(client, repo, seeded.index.images[0].digest, seeded.index.images[0])
    await client.close()  # lets the uploads under way finish


def images(inventory: Inventory) -> set[tuple[str, tuple[str, ...], int, int, int]]:
    """(root, tags, manifests, blobs, size) of every image."""
    return {
        (str(i.digest), tuple(t.reference for t in i.tags), len(i.manifests), len(i.blobs), i.size)
        for i in inventory.images()
    }


async def test_the_bucket_scan_finds_the_images_the_directory_scan_finds(
    aiohttp_client: ClientFactory,
    seaweed: Seaweed,
    registry: Registry,
    seeded: Seeded,
    tmp_path: Path,
) -> None:
    """After pulls through a mirror on a bucket, its scan gives the same images (tags, trees,
    sizes) as the scan of the cache directory in front, the same `ls` rows but for pull counts,
    and each object's size as listed; a tag list is no tag."""
    storage = seaweed.settings()
    await fill(aiohttp_client, registry, seeded, storage, tmp_path / "cache")
    directory = Scanner(Stores.at(tmp_path / "cache")).scan()

    async with open_bucket(storage) as bucket:
        inventory = await scan_bucket(bucket)

    assert images(inventory) == images(directory)
    assert len(images(inventory)) == 2
    assert [t.reference for t in inventory.tags] == [
        "docker.io/seed/multi:v1",
        "docker.io/seed/schema2:v1",
    ]
    bucket_rows = [{**r, "pulls": None, "last_pull": None} for r in rows(inventory)]
    directory_rows = [{**r, "pulls": None, "last_pull": None} for r in rows(directory)]
    assert bucket_rows == directory_rows
    keys = seaweed.keys(storage.prefix)
    for digest, blob in inventory.blobs.items():
        assert blob.path is None
        assert blob.size == keys[f"blobs/sha256/{digest.hex}"]
    for digest, manifest in inventory.manifests.items():
        assert manifest.file.size == manifest.content_size == keys[f"manifests/sha256/{digest.hex}"]
    assert set(inventory.blobs) == set(directory.blobs)
    assert not inventory.dangling_tags()


async def test_last_use_is_the_later_of_the_write_and_the_recorded_use(
    aiohttp_client: ClientFactory,
    seaweed: Seaweed,
    registry: Registry,
    seeded: Seeded,
    tmp_path: Path,
) -> None:
    """An object's last use is its last write unless the metadata store recorded a later use,
    and an earlier recorded use changes nothing; the store is asked about every blob and
    manifest at once. Eviction then chooses by those times."""
    storage = seaweed.settings()
    await fill(aiohttp_client, registry, seeded, storage, tmp_path / "cache")
    now = time.time()
    schema2 = Digest.parse(seeded.schema2.digest)
    layer = Digest.parse(seeded.schema2.layers[0].digest)
    index = Digest.parse(seeded.index.digest)
    recency = RecordedUse({schema2: now + 3600, layer: now + 7200, index: 1.0})

    async with open_bucket(storage) as bucket:
        inventory = await scan_bucket(bucket, recency)

    assert recency.asked == set(inventory.blobs) | set(inventory.manifests)
    assert inventory.manifests[schema2].file.last_used == now + 3600
    assert inventory.blobs[layer].last_used == now + 7200
    written = inventory.manifests[index].file.last_used
    assert now - 600 < written <= now + 1
    image = {i.digest: i for i in inventory.images()}
    assert image[schema2].last_used == now + 3600
    assert image[index].last_used < now + 1

    # With nothing protected, eviction takes the image used least recently: the index.
    sweeper = Sweeper(Stores.at(tmp_path / "elsewhere"), dry_run=True)
    evict(inventory, 1, Policy(0, (), None), sweeper, now + 10_000)
    assert sweeper.removed_manifests[0] == index
    assert sweeper.freed.images == 1


async def test_manifests_are_read_once_and_debris_is_no_content(
    aiohttp_client: ClientFactory,
    seaweed: Seaweed,
    registry: Registry,
    seeded: Seeded,
    tmp_path: Path,
) -> None:
    """A scan given what an earlier one learnt does not read a known manifest again (its links
    stay even when its object changed), a scan that learns afresh does; keys that are not
    content (uploads, strays, damaged tag records) are left out."""
    storage = seaweed.settings()
    await fill(aiohttp_client, registry, seeded, storage, tmp_path / "cache")
    schema2 = Digest.parse(seeded.schema2.digest)
    known: KnownLinks = LRUCache(100)
    async with open_bucket(storage) as bucket:
        first = await scan_bucket(bucket, known=known)
        assert schema2 in known
        prefix = storage.prefix
        seaweed.client.put_object(
            Bucket=BUCKET, Key=f"{prefix}/manifests/sha256/{schema2.hex}", Body=b"{}"
        )
        for stray in ("uploads/abc", "blobs/sha256/nothex", "other", "tags/docker.io/x/_list"):
            seaweed.client.put_object(Bucket=BUCKET, Key=f"{prefix}/{stray}", Body=b"x")
        seaweed.client.put_object(
            Bucket=BUCKET, Key=f"{prefix}/tags/docker.io/seed/bad/_tags/v1", Body=b"not json"
        )
        again = await scan_bucket(bucket, known=known)
        afresh = await scan_bucket(bucket)

    assert again.manifests[schema2].links == first.manifests[schema2].links
    assert first.manifests[schema2].links.blobs
    assert not afresh.manifests[schema2].links.blobs
    assert set(again.blobs) == set(first.blobs)
    assert [t.reference for t in again.tags] == [t.reference for t in first.tags]
