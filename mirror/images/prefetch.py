"""Prefetch: whole images pulled into the cache through the services a request uses, so every
manifest and blob is fetched, verified and committed exactly as a client's pull would (and is
shared with fills of the same blobs in other processes on the cache directory)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

from mirror import log
from mirror.errors import MirrorError
from mirror.images.targets import Target, resolve
from mirror.oci.contents import MAX_INDEX_DEPTH, Descriptor, InvalidManifest, read_contents
from mirror.oci.digest import Digest
from mirror.oci.platform import Platform, describe
from mirror.oci.reference import ImageReference
from mirror.pullthrough.blobs import CachedBlob, SharedBlob
from mirror.pullthrough.fills import FillFailed, FillView
from mirror.pullthrough.manifests import ManifestAnswer
from mirror.services import Services

BLOBS_AT_ONCE = 6
COMMIT_POLL = 0.02


T = TypeVar("T")


async def _all(work: Iterable[Awaitable[T]]) -> list[T]:
    """Every result, or the first error once all have ended (none is left running unheard)."""
    done = await asyncio.gather(*work, return_exceptions=True)
    for outcome in done:
        if isinstance(outcome, BaseException):
            raise outcome
    return cast(list[T], done)


class PrefetchFailed(Exception):
    """One image could not be prefetched; the message says why, in one line."""


class Progress(Protocol):
    """Where an image's byte counts go (a progress bar, or nowhere)."""

    def expect(self, size: int) -> None:
        """`size` more bytes are to come."""

    def advance(self, size: int) -> None:
        """`size` more bytes are in the cache."""


class NoProgress:
    def expect(self, size: int) -> None:
        pass

    def advance(self, size: int) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Prefetched:
    name: ImageReference
    digest: Digest
    blobs: int
    fetched: int  # bytes of this image's blobs that were fetched for it
    cached: int  # bytes of this image's blobs that were cached already
    stale: bool  # a tag whose upstream could not be asked: the cached answer was kept


class Prefetcher:
    """Prefetches images, several at once; a blob that two images share is fetched once, and
    the totals count every blob once."""

    def __init__(self, services: Services, platform: Platform | None) -> None:
        self._services = services
        self._platform = platform
        self._blob_slots = asyncio.Semaphore(BLOBS_AT_ONCE)
        # digest -> whether it had to be fetched (False: it was cached)
        self._blob_tasks: dict[Digest, asyncio.Task[bool]] = {}
        self.fetched = 0
        self.cached = 0

    async def prefetch(
        self, reference: ImageReference, progress: Progress | None = None
    ) -> Prefetched:
        progress = progress or NoProgress()
        facts = log.begin_request(f"prefetch {reference}")
        try:
            target = resolve(self._services.router, reference)
            manifests = self._services.manifests
            if reference.digest is not None:
                top = await manifests.by_digest(
                    target.upstream, target.repo, reference.digest, head=False
                )
            else:
                assert reference.tag is not None
                top = await manifests.by_tag(target.upstream, target.repo, reference.tag)
            stale = facts.cache == "stale"
            blobs = await self._walk(target, top, progress, depth=0)
            done = await _all(self._blob(target, blob, progress) for blob in blobs)
        except (MirrorError, FillFailed, InvalidManifest, OSError) as e:
            raise PrefetchFailed(getattr(e, "message", None) or str(e)) from e
        fetched = sum(blob.size for blob, new in zip(blobs, done, strict=True) if new)
        total = sum(blob.size for blob in blobs)
        return Prefetched(target.name, top.digest, len(blobs), fetched, total - fetched, stale)

    async def _walk(
        self, target: Target, manifest: ManifestAnswer, progress: Progress, depth: int
    ) -> list[Descriptor]:
        """Every blob the manifest needs (fetching the manifests of an index on the way)."""
        assert manifest.data is not None
        contents = read_contents(manifest.data)
        if not contents.is_index:
            progress.expect(sum(blob.size for blob in contents.blobs))
            return list(contents.blobs)
        if depth >= MAX_INDEX_DEPTH:
            raise InvalidManifest(f"indexes nested more than {MAX_INDEX_DEPTH} deep")
        children = [
            child
            for child in contents.manifests
            if self._platform is None or self._platform.matches(child.platform)
        ]
        if not children and contents.manifests:
            found = ", ".join(sorted({describe(c.platform) for c in contents.manifests}))
            raise PrefetchFailed(f"the index has no {self._platform} image (it has {found})")
        answers = await _all(
            self._services.manifests.by_digest(target.upstream, target.repo, c.digest, head=False)
            for c in children
        )
        nested = await _all(self._walk(target, answer, progress, depth + 1) for answer in answers)
        unique = {blob.digest: blob for blobs in nested for blob in blobs}
        return list(unique.values())

    async def _blob(self, target: Target, blob: Descriptor, progress: Progress) -> bool:
        task = self._blob_tasks.get(blob.digest)
        if task is None:
            task = asyncio.create_task(self._fetch_blob(target, blob, progress))
            self._blob_tasks[blob.digest] = task
            return await task
        was_fetched = await asyncio.shield(task)
        progress.advance(blob.size)
        return was_fetched

    async def _fetch_blob(self, target: Target, blob: Descriptor, progress: Progress) -> bool:
        """Whether the blob had to be fetched; raises if it could not be."""
        blobs = self._services.blobs
        async with self._blob_slots:
            source = blobs.cached(blob.digest) or await self._fetch(target, blob)
            if isinstance(source, CachedBlob | SharedBlob):
                progress.advance(blob.size)
                self.cached += blob.size
                return False
            async for _file, _offset, count in source.segments():
                progress.advance(count)
            if not await self._committed(blob.digest):
                raise PrefetchFailed(f"blob {blob.digest} was fetched but could not be stored")
            self.fetched += blob.size
            return True

    async def _fetch(self, target: Target, blob: Descriptor) -> CachedBlob | SharedBlob | FillView:
        """A blob larger than the whole cap would be fetched only to be thrown away (a pull
        streams it through; the cache cannot keep it), and again at every round of a schedule:
        refused before it is asked for. A bucket behind the cache keeps it all the same."""
        cap = self._services.upkeep.evictor.room().cap
        if self._services.upkeep.shared_blobs is None and cap is not None and blob.size > cap:
            raise PrefetchFailed(
                f"blob {blob.digest} is {blob.size} bytes: more than the cache may hold "
                f"(--max-size, {cap} bytes)"
            )
        return await self._services.blobs.fetch(target.upstream, target.repo, blob.digest)

    async def _committed(self, digest: Digest) -> bool:
        """Readers have every verified byte slightly before the fill's rename into blobs/."""
        store, fills = self._services.blob_store, self._services.fills
        while store.find(digest) is None:
            if fills.running(digest) is None:
                return store.find(digest) is not None
            await asyncio.sleep(COMMIT_POLL)
        return True
