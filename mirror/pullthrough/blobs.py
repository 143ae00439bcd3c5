"""Blob policy: content-addressed, cached forever; misses become fills shared by every reader,
in this process or any other on the same cache directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mirror import log
from mirror.cache.recency import AccessLog
from mirror.errors import UpstreamError
from mirror.oci.digest import Digest
from mirror.pullthrough.fills import Fills, FillView
from mirror.pullthrough.follower import FillerGone, FollowedFill
from mirror.storage.blobs import BlobStore
from mirror.storage.files import ReadLease
from mirror.storage.fill_lock import FillLock, lock_path
from mirror.upstream.registry import UpstreamRegistry

# A fill that another process took over may take this long to hear from its upstream.
FOLLOW_START_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class CachedBlob:
    path: Path
    size: int
    lease: ReadLease  # keeps eviction off the file until the response has been sent


class BlobService:
    def __init__(self, store: BlobStore, fills: Fills, access: AccessLog, spool: Path) -> None:
        self._store = store
        self._fills = fills
        self._access = access
        self._spool = spool

    def cached(self, digest: Digest) -> CachedBlob | None:
        found = self._open(digest)
        if found is not None:
            log.note_cache("hit")
        return found

    def _open(self, digest: Digest) -> CachedBlob | None:
        found = self._store.open_cached(digest)
        if found is None:
            return None
        self._access.blob(digest)
        return CachedBlob(*found)

    async def uncached_size(
        self, upstream: UpstreamRegistry, repo: str, digest: Digest
    ) -> int | None:
        """For HEAD of an uncached blob: chained caches and probing clients need a real answer.

        A blob this process is downloading (or committing) is answered from its fill; any
        other from an upstream HEAD."""
        running = self._fills.running(digest)
        if running is not None and running.size is not None:
            log.note_cache("hit" if running.finished else "coalesced")
            return running.size
        log.note_cache("miss")
        return await upstream.head_blob(repo, digest)

    async def fetch(
        self, upstream: UpstreamRegistry, repo: str, digest: Digest
    ) -> CachedBlob | FillView:
        """Join the fill of this blob (here or in another process), or start it, and wait for
        the upstream's answer; the blob may also turn out to be committed by now."""
        log.note_cache("miss")
        for _ in range(3):
            fill: FillView
            if (running := self._fills.running(digest)) is not None:
                # A fill that has every byte verified is as good as the cache.
                log.note_cache("hit" if running.finished else "coalesced")
                fill = running
            elif (lock := FillLock.try_acquire(self._spool, digest.hex)) is None:
                log.note_cache("coalesced")
                fill = FollowedFill(
                    digest,
                    lock_path(self._spool, digest.hex),
                    self._spool,
                    self._store.path(digest),
                    FOLLOW_START_TIMEOUT,
                )
            elif (found := self._open(digest)) is not None:
                lock.release()  # committed while we looked
                return found
            else:
                fill = self._fills.start(upstream, repo, digest, lock)
            try:
                await fill.started()
            except FillerGone:
                if (found := self._open(digest)) is not None:
                    return found
                continue
            return fill
        raise UpstreamError(f"could not start fetching {digest}")
