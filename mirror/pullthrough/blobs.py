"""Blob policy: content-addressed, cached forever; misses become fills shared by every reader,
in this process or any other on the same cache directory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Hashable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from mirror import log
from mirror.cache.recency import AccessLog
from mirror.errors import Busy, UpstreamError
from mirror.flight import SingleFlight
from mirror.oci.digest import Digest
from mirror.pullthrough.fills import FillTaken, FillView
from mirror.pullthrough.follower import FollowedFill
from mirror.pullthrough.running_fills import Fills
from mirror.storage.blobs import BlobStore
from mirror.storage.claims import Claim, claim_name, is_claimed, poll
from mirror.storage.files import ReadLease
from mirror.storage.shared_blobs import SharedBlobs
from mirror.upstream.registry import UpstreamRegistry

# A request that the same route's request in another process is making may wait this long for
# that one's answer (the upstream's headers) before it asks itself.
OTHER_START_WAIT = 60.0
ATTEMPTS = 4


@dataclass(frozen=True, slots=True)
class CachedBlob:
    path: Path
    size: int
    lease: ReadLease  # keeps eviction off the file until the response has been sent


@dataclass(frozen=True, slots=True)
class SharedBlob:
    """A blob the shared store holds and the cache directory does not: streamed from there, or
    (`redirect`) fetched from there by the client itself."""

    digest: Digest
    size: int
    store: SharedBlobs

    @property
    def redirect(self) -> bool:
        return self.store.redirect

    def chunks(self, start: int, end: int) -> AsyncGenerator[bytes, None]:
        return self.store.read(self.digest, start, end, self.size)

    async def url(self) -> str:
        return await self.store.url(self.digest)


class BlobService:
    """Answers blob requests: from the cache directory, from the shared store behind it if
    there is one, or by joining or starting the blob's fill."""

    def __init__(
        self,
        store: BlobStore,
        fills: Fills,
        access: AccessLog,
        spool: Path,
        shared: SharedBlobs | None = None,
    ) -> None:
        self._store = store
        self._shared = shared
        self._fills = fills
        self._access = access
        self._spool = spool
        self._starts: SingleFlight[Hashable, FillView] = SingleFlight()

    def cached(self, digest: Digest) -> CachedBlob | None:
        found = self._open(digest)
        if found is not None:
            log.note_cache("hit")
        return found

    def _open(self, digest: Digest) -> CachedBlob | None:
        """The committed blob, leased for sending (its use counted), if it is cached."""
        found = self._store.open_cached(digest)
        if found is None:
            return None
        self._access.blob(digest)
        if self._shared is not None:
            self._shared.served(digest)
        return CachedBlob(*found)

    async def uncached_size(
        self, upstream: UpstreamRegistry, repo: str, digest: Digest
    ) -> int | None:
        """For HEAD of an uncached blob: chained caches and probing clients need a real answer.

        A blob this process is downloading (or committing) is answered from its fill, one the
        shared store holds from there; any other from an upstream HEAD."""
        running = self._fills.running(digest)
        if running is not None and running.size is not None:
            log.note_cache("hit" if running.finished else "coalesced")
            return running.size
        if self._shared is not None and (size := await self._shared.find(digest)) is not None:
            log.note_cache("hit")
            return size
        log.note_cache("miss")
        return await upstream.head_blob(repo, digest)

    async def fetch(
        self,
        upstream: UpstreamRegistry,
        repo: str,
        digest: Digest,
        attended: Callable[[], AbstractAsyncContextManager[None]] = nullcontext,
    ) -> CachedBlob | SharedBlob | FillView:
        """Join the fill of this blob (here or in another process), or start one through this
        request's route and wait for the upstream's answer; the blob may also turn out to be
        committed by now, or be in the shared store.

        The wait for a start runs within `attended()`, which a request's handler ends when its
        client leaves (`mirror.api.responses.while_there`): a start that every request left
        takes a free download slot still, but gives up its place in the queue for one."""
        if self._shared is not None and self._fills.running(digest) is None:
            size = await self._shared.find(digest)
            if size is not None:
                log.note_cache("hit")
                self._access.blob(digest)  # a use every replica's bucket eviction sees
                if not self._shared.redirect:
                    self._shared.copy_down(digest, size)
                return SharedBlob(digest, size, self._shared)
        log.note_cache("miss")
        for _ in range(ATTEMPTS):
            if (running := self._fills.running(digest)) is not None:
                # A fill that has every byte verified is as good as the cache.
                log.note_cache("hit" if running.finished else "coalesced")
                return running
            if (found := self._open(digest)) is not None:
                return found
            followed = await FollowedFill.find(self._spool, digest, self._store.path(digest))
            if followed is not None:
                log.note_cache("coalesced")
                return followed
            # Done once every request waiting for the start has left.
            unwanted = asyncio.get_running_loop().create_future()
            try:
                # Requests through the same route share one upstream request; through another
                # route they ask for themselves, so one route's refusal is never another's.
                async with attended():
                    return await self._starts.run(
                        (upstream.name, repo, digest),
                        partial(self._start, upstream, repo, digest, unwanted),
                        partial(unwanted.set_result, None),
                    )
            except FillTaken:
                continue  # another route or process got it first: join that
        raise UpstreamError(f"could not start fetching {digest}")

    async def local(self, digest: Digest) -> CachedBlob | FillView | None:
        """What this host has of the blob, asking no upstream (for other replicas): a fill
        that a process on this cache directory runs, or the committed file."""
        if (running := self._fills.running(digest)) is not None:
            return running
        if (found := self._open(digest)) is not None:
            return found
        return await FollowedFill.find(self._spool, digest, self._store.path(digest))

    async def _start(
        self,
        upstream: UpstreamRegistry,
        repo: str,
        digest: Digest,
        unwanted: asyncio.Future[None],
    ) -> FillView:
        """Start the blob's fill through this route, holding the route's claim until the
        upstream answered. A start nobody waits for any more does not wait for a download
        slot: it lets the claim go at once rather than hold it for nobody."""
        name = claim_name(f"blob {upstream.name}/{repo}@{digest}")
        try:
            claim = Claim.try_take(self._spool, name)
        except OSError as e:
            raise Busy(f"cannot fetch {digest} now: {e.strerror}") from e
        if claim is None:
            # The same request is being made in another process: wait for its outcome (its
            # fill streams, or it gave up), then look again.
            async def settled() -> bool | None:
                done = self._store.find(digest) or not is_claimed(self._spool, name)
                return True if done or is_claimed(self._spool, digest.hex) else None

            await poll(settled, OTHER_START_WAIT)
            raise FillTaken(f"{digest} is being fetched by another process")
        with claim:
            if is_claimed(self._spool, digest.hex) or self._store.find(digest):
                # Another process's fill took the digest (and let go of this route) after our
                # look for it: join that fill rather than open a download only to drop it.
                raise FillTaken(f"{digest} is being fetched by another process")
            fill = self._fills.start(upstream, repo, digest, unwanted)
            await fill.started()
            return fill
