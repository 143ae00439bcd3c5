"""Blob fills: one task per missing blob writes the upstream body to a spool file while hashing
it; every request for that blob reads the growing spool file at its own pace (design.md §5).

The fill belongs to the app, not to a request, so it finishes (and the next pull is a hit) even if
every client goes away. Readers never see the last byte before the digest is verified: a wrong
or short body therefore always ends in an aborted connection, never a clean response. A body cut
off mid-way is resumed with an upstream `Range` request when the upstream honours it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO, Protocol

import aiohttp

from mirror import log
from mirror.errors import MirrorError, UpstreamError
from mirror.oci.digest import Digest
from mirror.storage.blobs import BlobStore
from mirror.storage.fill_lock import FillLock
from mirror.storage.layout import open_spool
from mirror.upstream.registry import UpstreamRegistry

MAX_ATTEMPTS = 4
BATCH = 4 << 20  # the most handed to the writing and hashing threads at once
FIRST_BATCH = 64 << 10
_IOV_MAX = 512
COMMIT_GRACE = 30.0
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class FillFailed(Exception):
    """Raised to readers when the fill they follow failed after the response started."""


class Space(Protocol):
    """What keeps the cache within its size: asked before each commit, told of a full disk."""

    async def reserve(self, size: int) -> None: ...

    def out_of_space(self) -> None: ...


class FillView(Protocol):
    """What a request needs of a fill, whether this process or another one runs it."""

    size: int | None

    async def started(self) -> None: ...

    def segments(
        self, start: int = 0, end: int | None = None
    ) -> AsyncIterator[tuple[BinaryIO, int, int]]: ...


class BlobFill:
    """A download run by this process, observed by any number of readers."""

    def __init__(self, digest: Digest, part: Path, final: Path) -> None:
        self.digest = digest
        self.size: int | None = None
        self._part = part
        self._final = final
        self._written = 0
        self._verified = False  # every byte is there and hashes to the digest
        self._committed = False
        self._error: MirrorError | None = None
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._changed = asyncio.Event()  # replaced after each change: a broadcast

    @property
    def finished(self) -> bool:
        """Readers need wait no longer: every byte is verified, or the fill failed."""
        return self._verified or self._error is not None

    @property
    def active(self) -> bool:
        """New readers should join this fill: it is neither committed nor failed."""
        return not self._committed and self._error is None

    async def started(self) -> None:
        """Wait until the upstream answered; raises its error if it refused."""
        await asyncio.shield(self._started)

    async def run(
        self,
        upstream: UpstreamRegistry,
        repo: str,
        store: BlobStore,
        lock: FillLock,
        space: Space | None = None,
    ) -> None:
        try:
            with open_spool(self._part) as spool:
                await self._download(upstream, repo, spool, lock)
                # Readers may have the last byte now; making it durable is not their wait.
                self._verified = True
                self._notify()
                await asyncio.to_thread(os.fsync, spool.fileno())
                if space is not None:
                    await space.reserve(self._written)
                # Renamed while still open and locked, so no start-up sweep can take it.
                store.commit(self._part, self.digest)
                self._committed = True
        except MirrorError as e:
            self._fail(e)
        except OSError as e:  # disk full, permissions: nothing half-written stays behind
            log.get_logger().error("blob fill failed", digest=str(self.digest), error=str(e))
            if space is not None and e.errno in (errno.ENOSPC, errno.EDQUOT):
                space.out_of_space()
            self._fail(UpstreamError(f"cannot store blob {self.digest}: {e.strerror}"))
        except asyncio.CancelledError:
            self._fail(UpstreamError("the mirror is shutting down"))
            raise
        finally:
            self._part.unlink(missing_ok=True)
            lock.release()
            self._notify()

    async def _download(
        self, upstream: UpstreamRegistry, repo: str, spool: BinaryIO, lock: FillLock
    ) -> None:
        hasher = self.digest.hasher()
        for attempt in range(1, MAX_ATTEMPTS + 1):
            offset = self._written
            try:
                async with upstream.open_blob(repo, self.digest, offset) as resp:
                    if offset == 0:
                        self.size = resp.content_length
                        lock.publish(self._part, self.size)
                        self._started.set_result(None)
                    else:
                        _check_resumed(resp, offset, self.size)
                    await self._copy(resp.content, spool.fileno(), hasher)
                break
            except UpstreamError as e:
                resumable = self._started.done() and self.size is not None
                if not resumable or self._written == offset or attempt == MAX_ATTEMPTS:
                    raise
                log.get_logger().warning(
                    "resuming blob fill",
                    digest=str(self.digest),
                    offset=self._written,
                    error=e.message,
                )
        if self.size is not None and self._written != self.size:
            raise UpstreamError(f"upstream sent {self._written} of {self.size} bytes")
        if hasher.hexdigest() != self.digest.hex:
            raise UpstreamError(f"upstream sent bytes that do not match {self.digest}")

    async def _copy(self, body: aiohttp.StreamReader, fd: int, hasher: hashlib._Hash) -> None:
        """Write and hash each batch in two threads at once, off the event loop; a batch is
        whatever arrived meanwhile, which the session's deep read buffer lets grow."""
        limit = FIRST_BATCH  # small at first, so the first bytes reach clients at once
        async for first in body.iter_any():
            batch = [first]
            size = len(first)
            while size < limit and (more := body.read_nowait(limit - size)):
                batch.append(more)
                size += len(more)
            limit = min(limit * 2, BATCH)
            await asyncio.gather(
                asyncio.to_thread(_write_all, fd, batch),
                asyncio.to_thread(_hash_all, hasher, batch),
            )
            self._wrote(size)

    def _wrote(self, count: int) -> None:
        self._written += count
        self._notify()

    def _fail(self, error: MirrorError) -> None:
        self._error = error
        if not self._started.done():
            self._started.set_exception(error)
            # Readers that never awaited `started` must not leave "exception never retrieved".
            self._started.exception()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _readable(self, position: int) -> bool:
        # Hold back the last byte until the digest is verified.
        return self.finished or self._written - 1 > position

    async def segments(
        self, start: int = 0, end: int | None = None
    ) -> AsyncIterator[tuple[BinaryIO, int, int]]:
        """(file, offset, count) for bytes [start, end) of the blob as they land, for the
        caller to send (with sendfile); raises FillFailed when the fill fails."""
        if self._error is not None:
            raise FillFailed(self._error.message)
        try:
            # Opened in the same step as the check: a commit (a rename on this thread) cannot
            # slip in between, and an open file survives the rename.
            file = open(self._final if self._committed else self._part, "rb", buffering=0)  # noqa: SIM115, ASYNC230
        except OSError as e:
            raise FillFailed(f"cannot read blob {self.digest}: {e.strerror}") from e
        with file:
            async for segment in spool_segments(file, start, end, self._readable_limit):
                yield segment

    async def _readable_limit(self, position: int) -> int:
        """How far readers may go, once there is more than `position` (or nothing more)."""
        while not self._readable(position):
            await self._changed.wait()
        # Once verified, a failed commit (a full disk at fsync) is no reason to cut readers off.
        if self._error is not None and not self._verified:
            raise FillFailed(self._error.message)
        return self._written if self._verified else self._written - 1


async def spool_segments(
    file: BinaryIO,
    start: int,
    end: int | None,
    readable_limit: Callable[[int], Awaitable[int]],
) -> AsyncIterator[tuple[BinaryIO, int, int]]:
    """(file, offset, count) runs of [start, end) as `readable_limit(position)` allows them."""
    position = start
    while end is None or position < end:
        limit = await readable_limit(position)
        if end is not None:
            limit = min(limit, end)
        if position >= limit:
            return
        yield file, position, limit - position
        position = limit


def _hash_all(hasher: hashlib._Hash, batch: list[bytes]) -> None:
    for chunk in batch:
        hasher.update(chunk)  # releases the GIL: runs beside the writer and the loop


def _write_all(fd: int, batch: list[bytes]) -> None:
    """writev in groups (no joined copy; the kernel takes at most IOV_MAX buffers a call);
    short writes are finished one by one."""
    for start in range(0, len(batch), _IOV_MAX):
        group = batch[start : start + _IOV_MAX]
        written = os.writev(fd, group)
        if written < sum(len(chunk) for chunk in group):
            rest = memoryview(b"".join(group))[written:]
            while rest:
                rest = rest[os.write(fd, rest) :]


def _check_resumed(resp: aiohttp.ClientResponse, offset: int, size: int | None) -> None:
    """A resumed body must be exactly the rest: a 200 means the upstream ignored the Range."""
    match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
    if resp.status != 206 or not match or int(match.group(1)) != offset:
        raise UpstreamError("upstream cannot resume the download (Range not honoured)")
    if match.group(3) != "*" and int(match.group(3)) != size:
        raise UpstreamError("upstream changed the blob's size while resuming")


class Fills:
    """The fills this process runs, keyed by digest; cancelled at shutdown."""

    def __init__(self, store: BlobStore, space: Space | None = None) -> None:
        self._store = store
        self._space = space
        self._fills: dict[Digest, BlobFill] = {}  # the one new readers join, per digest
        self._tasks: dict[asyncio.Task[None], BlobFill] = {}  # every fill still running

    def running(self, digest: Digest) -> BlobFill | None:
        fill = self._fills.get(digest)
        return fill if fill is not None and fill.active else None

    def start(
        self, upstream: UpstreamRegistry, repo: str, digest: Digest, lock: FillLock
    ) -> BlobFill:
        fill = BlobFill(digest, self._store.new_spool_file(digest), self._store.path(digest))
        self._fills[digest] = fill
        task = asyncio.create_task(fill.run(upstream, repo, self._store, lock, self._space))
        self._tasks[task] = fill
        task.add_done_callback(lambda t: self._done(t, digest, fill))
        return fill

    def _done(self, task: asyncio.Task[None], digest: Digest, fill: BlobFill) -> None:
        del self._tasks[task]
        if self._fills.get(digest) is fill:
            del self._fills[digest]

    async def close(self) -> None:
        """Stop downloading at shutdown, but let verified blobs finish their commit (an fsync
        and a rename): their clients already have every byte, so the cache should too."""
        committing = [task for task, fill in self._tasks.items() if fill.finished]
        if committing:
            await asyncio.wait(committing, timeout=COMMIT_GRACE)
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
