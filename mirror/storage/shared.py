"""The store behind the cache directory, when there is one: an S3 bucket (`--storage s3://…`)
holding the content every replica shares."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from mirror.config import S3Settings
from mirror.storage.backend import BlobBackend, ManifestBackend, TagBackend
from mirror.storage.s3.blobs import S3Blobs
from mirror.storage.s3.bucket import Bucket, open_bucket
from mirror.storage.s3.records import S3Manifests, S3Tags


@dataclass(frozen=True, slots=True)
class SharedStorage:
    """The shared store's blobs, manifests and tags; `redirect`: send clients to it for blobs
    not on local disk, rather than stream them; `keep_local`: keep blobs on local disk too;
    `cap`: the most its content may take (bytes), kept by `cache.bucket_cap` on the `bucket`
    itself."""

    blobs: BlobBackend
    manifests: ManifestBackend
    tags: TagBackend
    redirect: bool
    keep_local: bool
    bucket: Bucket
    cap: int | None


@contextlib.asynccontextmanager
async def open_shared(settings: S3Settings | None) -> AsyncIterator[SharedStorage | None]:
    """The bucket's stores while the context lasts; None when the directory is the store."""
    if settings is None:
        yield None
        return
    async with open_bucket(settings) as bucket:
        yield SharedStorage(
            S3Blobs(bucket),
            S3Manifests(bucket),
            S3Tags(bucket),
            redirect=settings.redirect,
            keep_local=settings.keep_local,
            bucket=bucket,
            cap=settings.max_size,
        )
