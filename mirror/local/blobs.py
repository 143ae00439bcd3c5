"""Blobs of local namespaces: uploads (in one request or in chunks), mounts and deletion.

Every upload streams to disk while hashing and becomes visible only once its digest matched,
by a rename into the cache's content-addressed `blobs/`: a blob that is there already (pushed
elsewhere, or cached from a mirrored registry) is kept as it is. A repository holds a blob once
it is linked into it (`LocalStore`); reading it through another repository is a 404, as from any
registry. Uploads that stream a body take one of `max_uploads` slots, waiting their turn like
downloads do (`FillSlots`), then `503`.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from mirror.errors import (
    BlobUnknown,
    BlobUploadInvalid,
    DigestInvalid,
    RangeInvalid,
    SizeInvalid,
    StorageFull,
)
from mirror.local.receive import Body, BodyCut, receive
from mirror.local.store import LocalStore
from mirror.local.uploads import Owner, Session, UploadSessions, upload_range
from mirror.oci.digest import Digest
from mirror.pullthrough.blobs import CachedBlob
from mirror.pullthrough.routing import LocalRoute, Route
from mirror.pullthrough.slots import FillSlots
from mirror.storage.blobs import BlobStore
from mirror.storage.disk import Disk
from mirror.storage.spool import mark_verified, open_spool

UPLOADS = "uploads"  # the one key uploads take their slots under


@dataclass(frozen=True, slots=True)
class Chunk:
    """A request body to append: where the client says it starts, and how long it says it is
    (from `Content-Range`, else `Content-Length`; None when it does not say)."""

    body: Body
    start: int | None
    length: int | None


def _owner(route: LocalRoute) -> Owner:
    return Owner(route.registry, route.repo)


class LocalBlobs:
    def __init__(
        self, store: LocalStore, uploads: UploadSessions, blobs: BlobStore, slots: FillSlots
    ) -> None:
        self._store = store
        self._uploads = uploads
        self._blobs = blobs
        self._slots = slots

    def find(self, route: LocalRoute, digest: Digest) -> CachedBlob:
        """The blob, if the repository holds it (stats: cheap enough for the loop)."""
        if not self._store.has_blob(route.registry, route.repo, digest):
            raise BlobUnknown(f"{route.registry}/{route.repo} has no blob {digest}")
        found = self._blobs.open_cached(digest)
        if found is None:
            raise BlobUnknown(f"{route.registry}/{route.repo} has no blob {digest}")
        return CachedBlob(*found)

    async def delete(self, route: LocalRoute, digest: Digest) -> None:
        """Unlink the blob from the repository; `mirror gc` removes it once nothing uses it."""
        if not await asyncio.to_thread(self._store.unlink_blob, route.registry, route.repo, digest):
            raise BlobUnknown(f"{route.registry}/{route.repo} has no blob {digest}")

    async def mount(self, route: LocalRoute, digest: Digest, source: Route | LocalRoute) -> bool:
        """Link a blob the store has into the repository, if `source` holds it: a local
        repository that has it linked, or a mirrored one (whose cached blobs are shared by
        digest). The caller has checked that the client may pull from `source`."""
        if self._blobs.find(digest) is None:
            return False
        if isinstance(source, LocalRoute) and not self._store.has_blob(
            source.registry, source.repo, digest
        ):
            return False
        await asyncio.to_thread(self._store.link_blob, route.registry, route.repo, digest)
        return True

    async def push(self, route: LocalRoute, digest: Digest, chunk: Chunk) -> None:
        """A whole blob in one request (`POST …/uploads/?digest=`), through the spool."""
        self._check_room(chunk.length)
        async with self._slots.slot(UPLOADS):
            part = self._blobs.new_spool_file(digest)
            try:
                with open_spool(part) as f:
                    hasher = digest.hasher()
                    try:
                        written = await receive(chunk.body, f.fileno(), 0, hasher, chunk.length)
                    except BodyCut as cut:
                        raise BlobUploadInvalid(str(cut)) from None
                    if chunk.length is not None and written != chunk.length:
                        raise SizeInvalid(f"{written} bytes came of the {chunk.length} declared")
                    if hasher.hexdigest() != digest.hex:
                        raise DigestInvalid(f"the content does not match {digest}")
                    mark_verified(f.fileno())
                    self._commit(part, digest)
            finally:
                part.unlink(missing_ok=True)
        await asyncio.to_thread(self._store.link_blob, route.registry, route.repo, digest)

    async def start_upload(self, route: LocalRoute) -> str:
        return await asyncio.to_thread(self._uploads.create, _owner(route))

    async def upload_size(self, route: LocalRoute, id: str) -> int:
        return await asyncio.to_thread(self._uploads.size, id, _owner(route))

    async def cancel_upload(self, route: LocalRoute, id: str) -> None:
        await asyncio.to_thread(self._uploads.cancel, id, _owner(route))

    async def append(self, route: LocalRoute, id: str, chunk: Chunk) -> int:
        """A `PATCH`: the chunk goes at the end of the session; returns its new size."""
        self._check_room(chunk.length)
        async with self._slots.slot(UPLOADS):
            with self._uploads.open(id, _owner(route)) as session:
                await self._append(session, chunk)
                return session.size

    async def finish(self, route: LocalRoute, id: str, digest: Digest, chunk: Chunk | None) -> None:
        """The closing `PUT`: the last chunk if any, then the digest of the whole must match.
        A mismatch ends the session with nothing stored."""
        self._check_room(chunk.length if chunk else None)
        async with self._slots.slot(UPLOADS):
            with self._uploads.open(id, _owner(route)) as session:
                if chunk is not None:
                    await self._append(session, chunk)
                actual = await asyncio.to_thread(self._uploads.digest_of, session, digest.algorithm)
                if actual != digest:
                    self._uploads.remove(session)
                    raise DigestInvalid(
                        f"the upload's content is {actual}, not {digest}; the upload is ended"
                    )
                mark_verified(session.fd)
                self._commit(session.data, digest)
                self._uploads.remove(session)
        await asyncio.to_thread(self._store.link_blob, route.registry, route.repo, digest)

    async def _append(self, session: Session, chunk: Chunk) -> None:
        size = session.size
        if chunk.start is not None and chunk.start != size:
            # distribution-spec "Pushing a blob in chunks": out of order is 416, with where
            # the upload stands.
            raise RangeInvalid(
                f"the chunk starts at {chunk.start}, the upload holds {size} bytes",
                headers={"Range": upload_range(size)},
            )
        hasher = self._uploads.hasher(session)
        try:
            written = await receive(chunk.body, session.fd, size, hasher, chunk.length)
        except asyncio.CancelledError:
            self._uploads.wrote(session, hasher)
            raise
        except BodyCut as cut:
            # What came is kept: the client may ask where the upload stands and go on.
            self._uploads.wrote(session, hasher)
            raise BlobUploadInvalid(
                f"{cut}; ask for the upload's status and send the rest"
            ) from None
        if chunk.length is not None and written != chunk.length:
            os.ftruncate(session.fd, size)
            raise SizeInvalid(f"{written} bytes came of the {chunk.length} declared")
        self._uploads.wrote(session, hasher)

    def _commit(self, part: Path, digest: Digest) -> None:
        """Publish verified bytes; a blob the store has already stays as it is (the same
        bytes, and perhaps being sent to someone right now). Done on the event loop, as a fill
        does, with no wait before the file is closed: what hears of a new blob starts its work
        there (the upload to a bucket behind the cache directory) and finds the file unlocked."""
        if self._blobs.find(digest) is None:
            self._blobs.commit(part, digest)

    def _check_room(self, length: int | None) -> None:
        """Refuse a body the disk cannot hold before reading any of it."""
        if length is None:
            return
        try:
            disk = Disk.of(self._uploads.root)
        except OSError:
            return
        if length + disk.reserve > disk.free:
            raise StorageFull(f"the mirror's disk has no room for {length} more bytes")
