"""The bucket's content as an `Inventory`, the snapshot the cache directory's `Scanner` takes,
so that images, `mirror ls` rows and eviction work on the bucket unchanged.

One listing of the prefix (ListObjectsV2, a page per thousand keys) finds every blob, manifest
and tag record; then the tag records are read (they change), and the manifests not seen by an
earlier scan (content-addressed: what they link to never changes). An object's last use is
the later of its last write and the last use the metadata store recorded (`Recency`): every
replica reads the bucket, and the bucket does not know when it was read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from cachetools import LRUCache

from mirror.cache.inventory import REMEMBERED, Inventory, KnownLinks, ManifestFile
from mirror.cache.links import links
from mirror.errors import DigestInvalid, TagInvalid
from mirror.meta.store import Recency
from mirror.oci.digest import Digest
from mirror.oci.names import validate_tag
from mirror.storage.files import StoredFile
from mirror.storage.s3.bucket import Bucket, Listed
from mirror.storage.tags import Pulls, TagEntry, parse_record

# Objects read at once: enough to hide the store's latency, few enough to leave it the others.
READS = 16
_TAGS = "/_tags/"


@dataclass
class Listing:
    """The bucket's keys by kind, as one listing found them."""

    blobs: dict[Digest, Listed]
    manifests: dict[Digest, Listed]
    tags: dict[tuple[str, str, str], Listed]  # (registry, repository, tag)


async def scan_bucket(
    bucket: Bucket, recency: Recency | None = None, known: KnownLinks | None = None
) -> Inventory:
    """Take an inventory of the bucket (StorageUnavailable when it cannot be read); `known`
    keeps what manifests link to from one scan to the next."""
    listing = await list_content(bucket)
    known = LRUCache(REMEMBERED) if known is None else known
    recorded = (
        await recency.last_used([*listing.blobs, *listing.manifests]) if recency is not None else {}
    )

    def stored(digest: Digest, listed: Listed) -> StoredFile:
        return StoredFile(digest, None, listed.size, max(listed.modified, recorded.get(digest, 0)))

    found = {d: known[d] for d in listing.manifests if d in known}
    new = [d for d in listing.manifests if d not in found]
    read = await _read_all(bucket, (listing.manifests[d].key for d in new))
    for digest, data in zip(new, read, strict=True):
        if data is not None:  # else removed while we looked
            found[digest] = known[digest] = (len(data), links(data))
    manifests = {
        digest: ManifestFile(stored(digest, listed), *found[digest])
        for digest, listed in listing.manifests.items()
        if digest in found
    }
    names = sorted(listing.tags)
    records = await _read_all(bucket, (listing.tags[name].key for name in names))
    tags = [
        # The bucket keeps no pull counts: those are each cache directory's own.
        TagEntry(registry, repo, tag, record, Pulls())
        for (registry, repo, tag), data in zip(names, records, strict=True)
        if data is not None and (record := parse_record(data)) is not None
    ]
    blobs = {digest: stored(digest, listed) for digest, listed in listing.blobs.items()}
    return Inventory(blobs, manifests, tags, spool=[])


async def list_content(bucket: Bucket) -> Listing:
    """The blobs, manifests and tag records one listing of the prefix finds."""
    listing = Listing({}, {}, {})
    async for listed in bucket.objects(""):
        top, _, rest = bucket.relative(listed.key).partition("/")
        if top in ("blobs", "manifests") and (digest := _digest(rest)) is not None:
            (listing.blobs if top == "blobs" else listing.manifests)[digest] = listed
        elif top == "tags" and (name := _tag_name(rest)) is not None:
            listing.tags[name] = listed
    return listing


def _digest(path: str) -> Digest | None:
    """The digest `<algorithm>/<hex>` names, or None for a key that is not ours."""
    try:
        return Digest.parse(path.replace("/", ":", 1))
    except DigestInvalid:
        return None


def _tag_name(path: str) -> tuple[str, str, str] | None:
    """(registry, repository, tag) of `<registry>/<repository>/_tags/<tag>`; None for a
    repository's tag list or a key that is not ours."""
    head, separator, tag = path.rpartition(_TAGS)
    registry, _, repo = head.partition("/")
    if not separator or not registry or not repo:
        return None
    try:
        return registry, repo, validate_tag(tag)
    except TagInvalid:
        return None


async def _read_all(bucket: Bucket, keys: Iterable[str]) -> list[bytes | None]:
    """Each object's bytes (None for one removed meanwhile), `READS` at a time."""
    turns = asyncio.Semaphore(READS)

    async def read(key: str) -> bytes | None:
        async with turns:
            found = await bucket.get_bytes(key)
        return None if found is None else found[0]

    return list(await asyncio.gather(*(read(key) for key in keys)))
