"""Removing content from the bucket (`mirror rm` and `mirror gc` on `--storage s3://…`): the
tags first, then the manifests, then the blobs, so that nothing resolves to a tree while it
goes; and what writers that died left under `uploads/`."""

from __future__ import annotations

from dataclasses import dataclass

from mirror.cache.removal import Removal
from mirror.storage.s3.blobs import S3Blobs
from mirror.storage.s3.bucket import Bucket
from mirror.storage.s3.records import S3Manifests, S3Tags

_UPLOADS = "uploads/"


async def remove(bucket: Bucket, removal: Removal) -> None:
    """Remove a plan's tags, manifests and `unused_blobs`; a tag that moved meanwhile stays."""
    tags, manifests, blobs = S3Tags(bucket), S3Manifests(bucket), S3Blobs(bucket)
    for entry in removal.tags:
        await tags.remove(entry.registry, entry.repo, entry.tag, entry.record.parsed_digest)
    for digest in removal.manifests:
        await manifests.remove(digest)
    for blob in removal.unused_blobs:
        await blobs.remove(blob.digest)


@dataclass
class Debris:
    """What writers that died left: objects under `uploads/` and multipart uploads never
    completed nor aborted."""

    objects: int = 0
    bytes: int = 0
    multipart: int = 0


async def clear_debris(bucket: Bucket, older_than: float, *, dry_run: bool = False) -> Debris:
    """Remove the objects under `uploads/` written before `older_than` (unix time) and abort
    the multipart uploads started before it, anywhere under the prefix (a blob too big for one
    copy is uploaded in parts to its final key)."""
    debris = Debris()
    async for listed in bucket.objects(_UPLOADS):
        if listed.modified < older_than:
            if not dry_run:
                await bucket.delete(listed.key)
            debris.objects += 1
            debris.bytes += listed.size
    async for key, upload, started in bucket.multipart_uploads():
        if started < older_than:
            if not dry_run:
                await bucket.abort(key, upload)
            debris.multipart += 1
    return debris
