"""Blob policy: content-addressed, cached forever; misses become shared fills."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mirror import log
from mirror.meta.store import MetadataStore
from mirror.oci.digest import Digest
from mirror.pullthrough.fills import BlobFill, Fills
from mirror.storage.blobs import BlobStore
from mirror.upstream.registry import UpstreamRegistry


@dataclass(frozen=True, slots=True)
class CachedBlob:
    path: Path
    size: int


class BlobService:
    def __init__(
        self, upstream: UpstreamRegistry, store: BlobStore, fills: Fills, meta: MetadataStore
    ) -> None:
        self._upstream = upstream
        self._meta = meta
        self._store = store
        self._fills = fills

    def cached(self, digest: Digest) -> CachedBlob | None:
        found = self._store.find(digest)
        if found is None:
            return None
        log.note_cache("hit")
        self._meta.record_access(str(digest))
        return CachedBlob(*found)

    async def upstream_size(self, repo: str, digest: Digest) -> int | None:
        """For HEAD of an uncached blob: chained caches and probing clients need a real answer."""
        log.note_cache("miss")
        return await self._upstream.head_blob(repo, digest)

    async def fetch(self, repo: str, digest: Digest) -> BlobFill:
        """Start (or join) the fill and wait for the upstream's answer."""
        log.note_cache("miss")
        fill = self._fills.get_or_start(repo, digest)
        self._meta.record_access(str(digest))
        await fill.started()
        return fill
