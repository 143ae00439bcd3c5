"""Blob fills: one app-owned task per missing blob writes the upstream body to a spool file while
hashing it; requests read the growing spool file at their own pace (design.md §5).

The fill belongs to the app, not to a request, so it finishes (and the next pull is a hit) even if
every client goes away. Readers never see the last byte before the digest is verified: a wrong
or short body therefore always ends in an aborted connection, never a clean response.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import BinaryIO

from mirror import log
from mirror.errors import MirrorError, UpstreamError
from mirror.oci.digest import Digest
from mirror.storage.blobs import BlobStore
from mirror.storage.layout import open_spool
from mirror.upstream.registry import UpstreamRegistry

CHUNK = 1 << 20


class FillFailed(Exception):
    """Raised to readers when the fill they follow failed after the response started."""


class BlobFill:
    """The state of one blob download, observed by any number of readers."""

    def __init__(self, digest: Digest, spool_file: Path, final: Path) -> None:
        self.digest = digest
        self.size: int | None = None
        self._spool_file = spool_file
        self._final = final
        self._written = 0
        self._committed = False
        self._error: MirrorError | None = None
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._progress = asyncio.Condition()

    @property
    def finished(self) -> bool:
        return self._committed or self._error is not None

    async def started(self) -> None:
        """Wait until the upstream answered; raises its error if it refused."""
        await asyncio.shield(self._started)

    async def run(self, upstream: UpstreamRegistry, repo: str, store: BlobStore) -> None:
        try:
            async with upstream.open_blob(repo, self.digest) as resp:
                self.size = resp.content_length
                with open_spool(self._spool_file) as spool:
                    self._started.set_result(None)
                    await self._copy(resp.content.iter_chunked(CHUNK), spool)
                    # Renamed while still open and locked, so no start-up sweep can take it.
                    store.commit(self._spool_file, self.digest)
                    self._committed = True
        except MirrorError as e:
            self._fail(e)
        except OSError as e:  # disk full, permissions: nothing half-written stays behind
            log.get_logger().error("blob fill failed", digest=str(self.digest), error=str(e))
            self._fail(UpstreamError(f"cannot store blob {self.digest}: {e.strerror}"))
        except asyncio.CancelledError:
            self._fail(UpstreamError("the mirror is shutting down"))
            raise
        finally:
            self._spool_file.unlink(missing_ok=True)
            await self._notify()

    async def _copy(self, chunks: AsyncIterator[bytes], spool: BinaryIO) -> None:
        hasher = self.digest.hasher()

        def write(chunk: bytes) -> None:
            spool.write(chunk)
            spool.flush()
            hasher.update(chunk)

        async for chunk in chunks:
            await asyncio.to_thread(write, chunk)
            self._written += len(chunk)
            await self._notify()
        if self.size is not None and self._written != self.size:
            raise UpstreamError(f"upstream sent {self._written} of {self.size} bytes")
        if hasher.hexdigest() != self.digest.hex:
            raise UpstreamError(f"upstream sent bytes that do not match {self.digest}")
        await asyncio.to_thread(os.fsync, spool.fileno())

    def _fail(self, error: MirrorError) -> None:
        self._error = error
        if not self._started.done():
            self._started.set_exception(error)
            # Readers that never awaited `started` must not leave "exception never retrieved".
            self._started.exception()

    async def _notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    def _readable(self, position: int) -> bool:
        return self.finished or self._written - 1 > position

    async def chunks(self) -> AsyncIterator[bytes]:
        """The blob's bytes from the start, as they land; raises FillFailed on failure."""
        # Open in the same step as the check: a commit (a rename on this thread) cannot slip
        # in between, and an open descriptor survives the rename.
        if self._error is not None:
            raise FillFailed(self._error.message)
        try:
            fd = os.open(self._final if self._committed else self._spool_file, os.O_RDONLY)
        except OSError as e:
            raise FillFailed(f"cannot read blob {self.digest}: {e.strerror}") from e
        try:
            position = 0
            while True:
                async with self._progress:
                    # Hold back the last byte until the digest is verified.
                    await self._progress.wait_for(partial(self._readable, position))
                if self._error is not None:
                    raise FillFailed(self._error.message)
                limit = self._written if self._committed else self._written - 1
                if position >= limit:
                    return
                data = await asyncio.to_thread(os.pread, fd, min(CHUNK, limit - position), position)
                if not data:
                    raise FillFailed("spool file ended early")
                position += len(data)
                yield data
        finally:
            os.close(fd)


class Fills:
    """The fills in flight, keyed by digest; owned by the app and cancelled at shutdown."""

    def __init__(self, upstream: UpstreamRegistry, store: BlobStore) -> None:
        self._upstream = upstream
        self._store = store
        self._fills: dict[Digest, BlobFill] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get_or_start(self, repo: str, digest: Digest) -> BlobFill:
        fill = self._fills.get(digest)
        if fill is not None and not fill.finished:
            return fill
        fill = BlobFill(digest, self._store.new_spool_file(digest), self._store.path(digest))
        self._fills[digest] = fill
        task = asyncio.create_task(fill.run(self._upstream, repo, self._store))
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, digest, fill))
        return fill

    def _done(self, task: asyncio.Task[None], digest: Digest, fill: BlobFill) -> None:
        self._tasks.discard(task)
        if self._fills.get(digest) is fill:
            del self._fills[digest]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
