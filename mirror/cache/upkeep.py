"""The cache's stores as the server uses them, wired to what keeps the cache in shape: the access
log (recency) and the evictor (the limits)."""

from __future__ import annotations

import time
from collections.abc import Callable

from mirror.cache.bucket_cap import BucketCap
from mirror.cache.evictor import Evictor
from mirror.cache.inventory import Stores
from mirror.cache.recency import AccessLog
from mirror.config import Settings
from mirror.meta.store import MetadataStore
from mirror.oci.digest import Digest
from mirror.storage.blobs import BlobStore
from mirror.storage.layout import CacheLayout
from mirror.storage.manifests import ManifestStore
from mirror.storage.quarantine import Quarantine
from mirror.storage.shared import SharedStorage
from mirror.storage.shared_blobs import SharedBlobs
from mirror.storage.spool_files import SpoolFiles
from mirror.storage.tags import TagStore


class Upkeep:
    """The server's stores, the access log recording their use and the evictor bounding them;
    with a `shared` store behind the cache directory, the stores read from and write to it,
    `shared_blobs` moves blobs between the two, and `bucket_cap` bounds the shared store."""

    def __init__(
        self,
        layout: CacheLayout,
        meta: MetadataStore,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        shared: SharedStorage | None = None,
    ) -> None:
        blobs = BlobStore(layout, on_commit=self._blob_stored)
        manifests = ManifestStore(
            layout,
            on_store=self._manifest_stored,
            shared=shared.manifests if shared else None,
        )
        tags = TagStore(layout, shared=shared.tags if shared else None)
        self.stores = Stores(layout, blobs, manifests, tags, SpoolFiles(layout), Quarantine(layout))
        self.access = AccessLog(blobs, manifests, tags, meta, clock)
        self.evictor = Evictor(
            layout.root,
            settings.max_size,
            settings.min_free,
            settings.protect_window,
            settings.pin,
            clock=clock,
            before_pass=self.access.flush,
            forget=manifests.forget,
        )
        self.bucket_cap = (
            None
            if shared is None or shared.cap is None
            else BucketCap(
                shared.bucket,
                meta,
                shared.cap,
                settings.protect_window,
                settings.pin,
                clock=clock,
                before_pass=self.access.flush,
            )
        )
        self.shared_blobs = (
            None
            if shared is None
            else SharedBlobs(
                blobs,
                shared.blobs,
                meta,
                redirect=shared.redirect,
                keep_local=shared.keep_local,
                space=self.evictor,
                clock=clock,
            )
        )

    def _blob_stored(self, digest: Digest, size: int) -> None:
        self.access.stored_blob(digest)
        self.evictor.stored(digest, size)
        if self.shared_blobs is not None:
            self.shared_blobs.committed(digest)

    def _manifest_stored(self, digest: Digest, size: int) -> None:
        self.access.stored_manifest(digest)
        self.evictor.stored(digest, size)

    async def start(self) -> None:
        await self.access.start()
        await self.evictor.start()
        if self.bucket_cap is not None:
            await self.bucket_cap.start()

    async def close(self) -> None:
        if self.bucket_cap is not None:
            await self.bucket_cap.close()
        if self.shared_blobs is not None:
            await self.shared_blobs.close()
        await self.evictor.close()
        await self.access.close()
