"""Writing a request body to a file while hashing it, off the event loop.

The body is read in batches; each batch is written and hashed in a thread while the next one
is read, so a push runs at the speed of the disk or of SHA-256, whichever is slower, and the
event loop only moves buffers. What was written stays written when the body breaks off, stalls
or the request is cancelled (the client may resume from there); after any other error (a full
disk, a body longer than declared) the file is cut back to where the request began.

A body that sends nothing for `IDLE_TIMEOUT` is treated as broken off: an upload holds one of
a few slots while its body streams, and a client that stops sending must not keep it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
from typing import Protocol

from aiohttp.http_exceptions import HttpProcessingError

from mirror.errors import SizeInvalid, StorageFull

BATCH = 1 << 20
# Shorter than the default `fill_wait` (20 s), so that a push waiting for a slot held by a
# stalled body gets it before its own wait ends.
IDLE_TIMEOUT = 10.0


class Body(Protocol):
    """What is read of a request body (aiohttp's `StreamReader`)."""

    async def readany(self) -> bytes: ...


class BodyCut(Exception):
    """The client's body broke off or stalled; `written` bytes of it were written."""

    def __init__(self, written: int, how: str = "broke off") -> None:
        super().__init__(f"the request body {how} after {written} bytes")
        self.written = written


async def receive(
    body: Body,
    fd: int,
    offset: int,
    hasher: hashlib._Hash | None,
    limit: int | None,
) -> int:
    """Write `body` to `fd` from `offset` (updating `hasher` with each byte written); returns
    how many bytes were written. More than `limit` bytes is `SizeInvalid`, a full disk is
    `StorageFull` (both with the file as it was before), a broken body is `BodyCut`."""
    written = 0
    buffered: list[bytes] = []
    size = 0
    pending: asyncio.Future[None] | None = None
    cut: str | None = None
    try:
        while True:
            try:
                async with asyncio.timeout(IDLE_TIMEOUT):
                    chunk = await body.readany()
            except (HttpProcessingError, ConnectionError, asyncio.IncompleteReadError):
                chunk, cut = b"", "broke off"
            except TimeoutError:
                chunk, cut = b"", f"sent nothing for {IDLE_TIMEOUT:g} s"
            if limit is not None and written + size + len(chunk) > limit:
                raise SizeInvalid(f"the body is longer than the {limit} bytes declared")
            if chunk:
                buffered.append(chunk)
                size += len(chunk)
            if size >= BATCH or (not chunk and size):
                if pending is not None:
                    await pending
                data = b"".join(buffered)
                buffered.clear()
                size = 0
                pending = asyncio.ensure_future(
                    asyncio.to_thread(_write, fd, data, offset + written, hasher)
                )
                written += len(data)
            if not chunk:
                break
        if pending is not None:
            await pending
            pending = None
    except BaseException as e:
        # The thread must be done with the descriptor before the caller closes it.
        await _settle(pending)
        if not isinstance(e, asyncio.CancelledError):
            with contextlib.suppress(OSError):
                os.ftruncate(fd, offset)
        # Cancelled (the client went away, where the server cancels its handler): what was
        # written stays, as for a body that broke off.
        raise
    if cut is not None:
        raise BodyCut(written, cut)
    return written


async def _settle(pending: asyncio.Future[None] | None) -> None:
    """Wait for a write in flight to end, whatever happens to this task meanwhile."""
    while pending is not None and not pending.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(pending)
    if pending is not None and not pending.cancelled():
        pending.exception()  # retrieved: the error that matters is the one being raised


def _write(fd: int, data: bytes, at: int, hasher: hashlib._Hash | None) -> None:
    view = memoryview(data)
    done = 0
    try:
        while done < len(view):
            done += os.pwrite(fd, view[done:], at + done)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull("the mirror's disk is full: the upload cannot be stored") from e
        raise
    if hasher is not None:
        hasher.update(data)
