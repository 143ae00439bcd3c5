"""Blobs between the cache directory and the shared store: each blob committed locally is
uploaded, each blob read from the shared store is copied down (in the background, so the next
hit goes out by sendfile), and reads of a whole blob are checked against its digest.

The cache directory stays bounded by its size cap: a blob evicted from it is still in the
shared store. An upload reads an open descriptor of the local file and takes no read lease, so
eviction never waits for it: a blob evicted meanwhile is still uploaded whole (its bytes stay
until the descriptor is closed).

With `keep_local` off, the directory keeps no blob the store holds: each is removed once it is
there (when no client reads it), and nothing is copied down; hits come from the store.

Replicas that stream a blob from the one fetching it commit it at about the same moment, before
the first upload is done, so each would find the store without it. An upload lease in the
metadata store lets one process upload; the others look again the next time they serve the
blob after RECHECK_AFTER, and upload it then if that upload failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any, BinaryIO, Protocol

from cachetools import TTLCache

from mirror import log
from mirror.errors import StorageUnavailable
from mirror.meta.store import MetadataStore
from mirror.oci.digest import Digest
from mirror.storage.backend import BlobBackend
from mirror.storage.blobs import BlobStore
from mirror.storage.spool import open_spool

# How long shutdown waits for uploads and copies under way before it cuts them off.
CLOSE_GRACE = 30.0
# A blob served from the cache directory that this process has not seen in the store is looked
# for there (and uploaded if missing) at most this often: a failed upload, a crash right after a
# commit, or a directory older than the bucket may have left it on local disk alone.
RECHECK_AFTER = 60.0
# A blob this process knows the store holds is looked for there again after this long, if it is
# served from the cache directory meanwhile: the bucket's cap may have evicted it, or an
# operator removed it, while it is in use here (and so belongs in the shared cache).
HELD_FOR = 3600.0
# Without local blobs, how long a blob stays on local disk before it is looked at again, when
# the store lacks it or a client reads it.
LOOK_AGAIN = 30.0
# How long an upload keeps others from uploading the same blob, unless it ends first.
UPLOAD_LEASE = 600.0
# Uploads and copies that run at once; the rest wait their turn (a burst of them must not take
# every connection to the store, or every descriptor).
TRANSFERS = 8


class Space(Protocol):
    """What keeps the cache directory within its size: asked before each copy is committed,
    told of each blob removed."""

    async def reserve(self, size: int) -> None: ...

    def removed(self, size: int) -> None: ...


class SharedBlobs:
    """One process's view of the shared store's blobs; remembers which it knows are there."""

    def __init__(
        self,
        local: BlobStore,
        shared: BlobBackend,
        meta: MetadataStore,
        *,
        redirect: bool = False,
        keep_local: bool = True,
        space: Space | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` times what this process remembers of the store."""
        self._keep_local = keep_local
        self._local = local
        self._shared = shared
        self._meta = meta
        self.redirect = redirect
        self._space = space
        # Known to be in the store (found, uploaded or copied from there): not uploaded again
        # for a while, but looked for again after HELD_FOR, as it may have left the store.
        self._held: TTLCache[Digest, bool] = TTLCache(100_000, HELD_FOR, timer=clock)
        self._checked: TTLCache[Digest, bool] = TTLCache(100_000, RECHECK_AFTER, timer=clock)
        # Found damaged in the store: not read from there for a while, so that the blob is
        # fetched again (from an upstream or a peer) and the store's copy replaced once it is
        # committed here.
        self._damaged: TTLCache[Digest, bool] = TTLCache(100_000, RECHECK_AFTER, timer=clock)
        self._copying: set[Digest] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: set[asyncio.Task[None]] = set()  # `_later`: not worth waiting for
        self._turns = asyncio.Semaphore(TRANSFERS)
        self._closing = False

    async def find(self, digest: Digest) -> int | None:
        """The blob's size if the shared store holds it (StorageUnavailable if it cannot say);
        asked each time, as the store's content may be removed behind this process's back.
        A blob whose copy there was found damaged a moment ago counts as missing."""
        if digest in self._damaged:
            return None
        size = await self._shared.stat(digest)
        if size is not None:
            self._held[digest] = True
        return size

    async def url(self, digest: Digest) -> str:
        return await self._shared.url(digest)

    async def read(
        self, digest: Digest, start: int, end: int, size: int
    ) -> AsyncGenerator[bytes, None]:
        """Bytes [start, end) from the shared store; the whole blob only if it matches its
        digest (the last chunk is held back until it is checked)."""
        hasher = digest.hasher() if (start, end) == (0, size) else None
        held = b""
        # An empty blob asks the store for nothing (RFC 9110 has no empty byte range).
        if start < end:
            async with contextlib.aclosing(self._shared.read(digest, start, end)) as chunks:
                async for chunk in chunks:
                    if hasher is None:
                        yield chunk
                        continue
                    await asyncio.to_thread(hasher.update, chunk)
                    if held:
                        yield held
                    held = chunk
        if hasher is not None:
            if hasher.hexdigest() != digest.hex:
                log.get_logger().error("damaged blob in the object store", digest=str(digest))
                self._damaged[digest] = True
                self._held.pop(digest, None)
                self._checked.pop(digest, None)
                raise StorageUnavailable(f"the object store's copy of {digest} is damaged")
            if held:
                yield held

    def committed(self, digest: Digest) -> None:
        """A blob was committed to the cache directory: upload it unless the store has it."""
        if digest not in self._held:
            self._checked[digest] = True
            self._spawn(self._publish(digest))

    def served(self, digest: Digest) -> None:
        """A blob went out from the cache directory: see that the store has it too (two
        dictionary lookups, unless it is to be looked for)."""
        if digest not in self._held and digest not in self._checked:
            self._checked[digest] = True
            self._spawn(self._publish(digest))

    def copy_down(self, digest: Digest, size: int) -> None:
        """Copy a blob the store holds into the cache directory, once, in the background
        (unless the directory keeps no blobs the store holds)."""
        if self._keep_local and digest not in self._copying:
            self._copying.add(digest)
            self._spawn(self._copy_down(digest, size))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        if self._closing:
            work.close()
            return
        task = asyncio.create_task(self._in_turn(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _in_turn(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            async with self._turns:
                await work
        finally:
            work.close()  # cancelled before its turn: never started, never awaited

    async def _publish(self, digest: Digest) -> None:
        try:
            file = self._local.open_quietly(digest)  # an upload is no use of it
        except OSError:
            return  # removed meanwhile
        try:
            size = os.fstat(file.fileno()).st_size
            # A damaged copy is replaced by this one, verified when it was committed.
            missing = digest in self._damaged or await self._shared.stat(digest) is None
            if missing and not await self._upload(digest, size, file):
                self._later(digest)  # another process uploads it
                return
            self._damaged.pop(digest, None)
            self._held[digest] = True
        except StorageUnavailable as e:
            log.warn_once("cannot upload blobs to the object store", error=e.message)
            self._later(digest)
            return
        finally:
            file.close()
        if not self._keep_local:
            if await asyncio.to_thread(self._local.remove, digest):
                if self._space is not None:
                    self._space.removed(size)
            else:
                self._later(digest)  # a client reads it now

    def _later(self, digest: Digest) -> None:
        """Without local blobs: look at this one again in a while, to remove it once the store
        has it and no client reads it."""
        if self._keep_local or self._closing:
            return

        async def again() -> None:
            await asyncio.sleep(LOOK_AGAIN)
            self._spawn(self._publish(digest))

        task = asyncio.create_task(again())
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    async def _upload(self, digest: Digest, size: int, file: BinaryIO) -> bool:
        """Upload the blob unless another process holds its upload lease (False then)."""
        key = f"upload:{digest}"
        if not await self._meta.try_lease(key, UPLOAD_LEASE):
            return False
        try:
            await self._shared.publish(file, digest, size)
        finally:
            await self._meta.release_lease(key)
        log.get_logger().info("uploaded a blob to the object store", digest=str(digest), size=size)
        return True

    async def _copy_down(self, digest: Digest, size: int) -> None:
        part = self._local.new_spool_file(digest)
        try:
            with open_spool(part) as spool:
                async for chunk in self.read(digest, 0, size, size):
                    await asyncio.to_thread(spool.write, chunk)
                if spool.tell() != size:
                    raise StorageUnavailable(f"the object store sent part of {digest}")
                spool.flush()
                await asyncio.to_thread(os.fsync, spool.fileno())
                if self._space is not None:
                    await self._space.reserve(size)
                self._held[digest] = True  # so the commit uploads nothing
                # Renamed while still open and locked, so no start-up sweep can take it.
                self._local.commit(part, digest)
        except StorageUnavailable as e:
            log.warn_once("cannot copy blobs from the object store", error=e.message)
        except OSError as e:
            log.warn_once("cannot copy blobs from the object store", error=e.strerror)
        finally:
            part.unlink(missing_ok=True)
            self._copying.discard(digest)

    async def close(self) -> None:
        """Let uploads and copies under way finish (for a while), then stop the rest."""
        self._closing = True
        for task in set(self._waiting):
            task.cancel()
        await asyncio.gather(*self._waiting, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=CLOSE_GRACE)
        for task in set(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
