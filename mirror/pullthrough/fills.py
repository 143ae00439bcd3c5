"""Blob fills: one task per missing blob writes the upstream body to a spool file while hashing
it; every request for that blob reads the growing spool file at its own pace (design.md §5).

The fill belongs to the app, not to a request, so it finishes (and the next pull is a hit) even if
every client goes away, unless the download slot it holds is wanted by another blob while nobody
reads it; only one that has no slot yet gives up when every request that asked for it is gone,
rather than wait its turn for nobody. Readers follow the spool's one rule (mirror/storage/spool.py):
the last byte only once the digest is verified, so a wrong or short body always ends in an aborted
connection, never a clean response. A body cut off mid-way is resumed with an upstream `Range`
request when the upstream honours it. No fill writes more than the cache could keep of one blob
(mirror/pullthrough/bounds.py).

A fill claims its digest (mirror/storage/claims.py) only once the upstream has answered with the
blob, so a request through a repository the upstream refuses, or that answers slowly, never holds
up a request for the same blob through another route: each route asks on its own, the first to
get the blob streams it, and the others drop their answer and join.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import BinaryIO, Protocol

import aiohttp

from mirror import log
from mirror.cache.usage import Room
from mirror.errors import Busy, MirrorError, UpstreamError
from mirror.oci.digest import Digest
from mirror.pullthrough.bounds import FillBound
from mirror.pullthrough.slots import FillSlots
from mirror.pullthrough.sources import BlobSource, announced_size, check_resumed
from mirror.pullthrough.spool_writer import SpoolWriter, write_all
from mirror.storage.blobs import BlobStore
from mirror.storage.claims import Claim, has_readers
from mirror.storage.spool import (
    fill_record,
    mark_verified,
    open_spool,
    readable_end,
    spool_segments,
)
from mirror.upstream.failures import describe

MAX_ATTEMPTS = 4
INLINE_FIRST = 256 << 10  # a first chunk this small is written on the event loop
FIRST_READER_WAIT = 0.005
COMMIT_GRACE = 30.0
# A fill nobody has read for this long, and that is not near its end, may be given up for
# another that waits for a slot.
ABANDON_AFTER = 2.0
NEAR_END = 0.75


class FillFailed(Exception):
    """Raised to readers when the fill they follow failed after the response started."""


class FillTaken(Exception):
    """Another fill (another route, or another process) streams this blob: join it instead."""


class Space(Protocol):
    """What keeps the cache within its size: asked what a download may write, asked before
    each commit, told of a full disk."""

    def room(self) -> Room: ...

    async def reserve(self, size: int) -> None: ...

    def out_of_space(self) -> None: ...


class FillView(Protocol):
    """What a request needs of a fill, whether this process or another one runs it."""

    size: int | None

    def segments(
        self, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[tuple[BinaryIO, int, int], None]: ...


class BlobFill:
    """A download run by this process, observed by any number of readers."""

    def __init__(
        self,
        digest: Digest,
        part: Path,
        final: Path,
        spool: Path,
        announce: Callable[[BlobFill], None],
    ) -> None:
        self.digest = digest
        self._announce = announce  # told once the fill streams, so new readers find it
        self.size: int | None = None
        self._part = part
        self._final = final
        self._spool = spool
        self._written = 0
        self._bound = FillBound(None, digest)  # the one `run` is given replaces it
        self._verified = False  # every byte is there and hashes to the digest
        self._committed = False
        self._error: BaseException | None = None
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._changed = asyncio.Event()  # replaced after each change: a broadcast
        self._readers = 0
        self._joined = asyncio.Event()  # a reader has come
        self._idle_since = time.monotonic()

    @property
    def finished(self) -> bool:
        """Readers need wait no longer: every byte is verified, or the fill failed."""
        return self._verified or self._error is not None

    @property
    def streaming(self) -> bool:
        """New readers should join this fill: it has the blob and is neither done nor failed."""
        return self._started.done() and not self._committed and self._error is None

    def is_abandoned(self) -> bool:
        """Nobody in any process has read it for a while, and much of it is still to come."""
        if self._readers or not self._started.done() or self.finished:
            return False
        if time.monotonic() - self._idle_since < ABANDON_AFTER:
            return False
        if self.size is not None and self._written >= NEAR_END * self.size:
            return False
        return not has_readers(self._spool, self.digest.hex)

    async def started(self) -> None:
        """Wait until the upstream answered with the blob; raises why not if it did not."""
        await asyncio.shield(self._started)

    async def run(
        self,
        upstream: BlobSource,
        repo: str,
        store: BlobStore,
        slots: FillSlots,
        make_room: Callable[[str], None],
        space: Space | None = None,
        unwanted: asyncio.Future[None] | None = None,
    ) -> None:
        """Download the blob; `unwanted` done means nobody waits for it to start any more, so
        it does not wait for a slot (mirror/pullthrough/slots.py)."""
        try:
            async with (
                slots.slot(upstream.name, make_room, unwanted),
                upstream.open_blob(repo, self.digest) as first,
            ):
                size = announced_size(first, upstream.name)
                self._bound = FillBound(space, self.digest)
                self._bound.admit(size)
                claim = Claim.try_take(self._spool, self.digest.hex)
                if claim is None:
                    raise FillTaken(f"{self.digest} is being fetched through another route")
                with claim, open_spool(self._part) as spool:
                    self.size = size
                    claim.publish(fill_record(self._part, size))
                    self._started.set_result(None)
                    self._announce(self)
                    await self._first_reader(first)
                    await self._receive(upstream, repo, first, spool.fileno())
                    mark_verified(spool.fileno())
                    # Readers may have the last byte now; making it durable is not their wait.
                    self._verified = True
                    self._notify()
                    await asyncio.to_thread(os.fsync, spool.fileno())
                    if space is not None:
                        await space.reserve(self._written)
                    # Renamed while still open and locked, so no start-up sweep can take it.
                    store.commit(self._part, self.digest)
                    self._committed = True
        except (MirrorError, FillTaken) as e:
            self._fail(e)
        except OSError as e:  # disk full, no descriptors: nothing half-written stays behind
            log.get_logger().error("blob fill failed", digest=str(self.digest), error=str(e))
            if space is not None and e.errno in (errno.ENOSPC, errno.EDQUOT):
                space.out_of_space()
            self._fail(Busy(f"cannot store blob {self.digest}: {e.strerror}"))
        except asyncio.CancelledError:
            self._fail(UpstreamError(f"the download of {self.digest} was stopped"))
            raise
        except Exception as e:
            # A fault nothing here expects: its readers must still learn that the fill ended,
            # or they would wait for bytes that never come.
            log.get_logger().error(
                "blob fill failed", digest=str(self.digest), error=f"{type(e).__name__}: {e}"
            )
            self._fail(Busy(f"cannot fetch blob {self.digest} now"))
        finally:
            self._part.unlink(missing_ok=True)
            self._notify()

    async def _first_reader(self, first: aiohttp.ClientResponse) -> None:
        """Let the request that asked for the blob send its answer's headers before the body
        is taken in. That request's way to its headers takes several turns of the event loop,
        and in each the upstream connection would otherwise be read and parsed: about half a
        millisecond added to the client's first byte, so it is not read until then. A fill
        nobody reads (a prefetch, a client gone) waits no longer than FIRST_READER_WAIT."""
        # The response's own flow control: what aiohttp does when its buffer is full.
        protocol = first.connection.protocol if first.connection is not None else None
        if protocol is not None and protocol.connected:
            protocol.pause_reading()
        else:
            protocol = None
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FIRST_READER_WAIT):
                    await self._joined.wait()
        finally:
            # A connection lost meanwhile has nothing left to read.
            if protocol is not None and protocol.connected:
                protocol.resume_reading()

    async def _receive(
        self, upstream: BlobSource, repo: str, first: aiohttp.ClientResponse, fd: int
    ) -> None:
        hasher = self.digest.hasher()
        received = upstream.stats.received
        for attempt in range(1, MAX_ATTEMPTS + 1):
            offset = self._written
            try:
                if attempt == 1:
                    await self._copy(first, fd, hasher, received)
                else:
                    async with upstream.open_blob(repo, self.digest, offset) as resp:
                        check_resumed(resp, offset, self.size)
                        await self._copy(resp, fd, hasher, received)
                break
            except UpstreamError as e:
                stuck = self._written == offset and not upstream.relayed
                if self.size is None or stuck or attempt == MAX_ATTEMPTS:
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

    async def _copy(
        self,
        resp: aiohttp.ClientResponse,
        fd: int,
        hasher: hashlib._Hash,
        received: Callable[[int], None],
    ) -> None:
        """Write and hash the body as it arrives: a small first chunk right here on the event
        loop, so readers get the blob's first bytes without a hand-over to a thread, and the
        rest on a thread of the fill's own (mirror/pullthrough/spool_writer.py)."""
        writer: SpoolWriter | None = None
        total = self._written
        try:
            async for chunk, _ in resp.content.iter_chunks():
                total += len(chunk)
                if self.size is not None and total > self.size:
                    # A chunked body longer than the blob: never write past its size.
                    raise UpstreamError(
                        f"upstream sent more than the {self.size} bytes of the blob"
                    )
                self._bound.check(total)
                received(len(chunk))
                if writer is None and total == len(chunk) and total <= INLINE_FIRST:
                    write_all(fd, chunk)
                    hasher.update(chunk)
                    self._wrote(len(chunk))
                    continue
                if writer is None:
                    writer = SpoolWriter(fd, hasher, self._wrote)
                await writer.put(chunk)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise UpstreamError(f"the upstream's body broke off: it {describe(e)}") from e
        finally:
            if writer is not None:
                # What it was handed is written before the spool file may close, or a resumed
                # body start.
                await writer.close()
        if writer is not None and writer.error is not None:
            raise writer.error

    def _wrote(self, count: int) -> None:
        self._written += count
        self._notify()

    def _fail(self, error: BaseException) -> None:
        self._error = error
        if not self._started.done():
            self._started.set_exception(error)
            # Readers that never awaited `started` must not leave "exception never retrieved".
            self._started.exception()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def segments(
        self, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[tuple[BinaryIO, int, int], None]:
        """(file, offset, count) for bytes [start, end) of the blob as they land, for the
        caller to send (with sendfile); raises FillFailed when the fill fails."""
        if self._error is not None:
            raise FillFailed(str(self._error))
        try:
            # Opened in the same step as the check: a commit (a rename on this thread) cannot
            # slip in between, and an open file survives the rename.
            file = open(self._final if self._committed else self._part, "rb", buffering=0)  # noqa: SIM115, ASYNC230
        except OSError as e:
            raise FillFailed(f"cannot read blob {self.digest}: {e.strerror}") from e
        self._readers += 1
        self._joined.set()
        try:
            with file:
                async for segment in spool_segments(file, start, end, self._readable_limit):
                    yield segment
        finally:
            self._readers -= 1
            if not self._readers:
                self._idle_since = time.monotonic()

    async def wait_done(self) -> None:
        """Wait, as a reader would, until every byte is verified; raises FillFailed if not."""
        async for _ in self.segments():
            pass

    async def _readable_limit(self, position: int) -> int:
        """How far readers may go, once there is more than `position` (or nothing more)."""
        while not self.finished and readable_end(self._written, False) <= position:
            await self._changed.wait()
        # Once verified, a failed commit (a full disk at fsync) is no reason to cut readers off.
        if self._error is not None and not self._verified:
            raise FillFailed(str(self._error))
        return readable_end(self._written, self._verified)
