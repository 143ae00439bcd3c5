"""Writing and hashing a fill's body off the event loop, chunk by chunk as it arrives.

One thread per fill takes the chunks in order from a queue, writes each to the spool file and
hashes it while its bytes are still in the CPU's cache, and reports progress back to the loop.
Handing each chunk over at once costs less than gathering batches for pool threads: a batch of
megabytes has left the cache by the time a thread writes it, and a writing and a hashing thread
per batch cost two hand-overs and two wake-ups of the loop. The loop itself never waits on the
disk, which may stall for long (dirty-page throttling, a slow or remote file system).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

# What may wait for the thread before the receiving side waits in turn: it bounds a fill's
# memory whatever the upstream's speed against the disk's.
QUEUED_MAX = 4 << 20
# The thread reports progress (readers may send what it wrote) once it has this much written
# and unreported, and otherwise at most REPORT_DELAY after its last report, or after its last
# chunk when no more comes: each report wakes the loop, which must not happen for each chunk
# on a link that delivers small ones.
REPORT_EVERY = 1 << 20
REPORT_DELAY = 0.01


class SpoolWriter:
    """Writes chunks to `fd` and feeds them to `hasher`, in order, on a thread of its own;
    `wrote(count)` runs on the event loop as bytes reach the file."""

    def __init__(self, fd: int, hasher: hashlib._Hash, wrote: Callable[[int], None]) -> None:
        self._loop = asyncio.get_running_loop()
        # A descriptor of its own: the thread may outlive a cancelled fill by a few writes,
        # and must never write into whatever file reuses the fill's descriptor number.
        self._fd = os.dup(fd)
        self._hasher = hasher
        self._wrote = wrote
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._queued = 0  # handed over and not yet reported written (kept on the loop)
        self._room = asyncio.Event()
        self._error: OSError | None = None
        self._done: asyncio.Future[None] = self._loop.create_future()
        try:
            threading.Thread(target=self._run, name="spool-writer", daemon=True).start()
        except RuntimeError as e:  # no thread to be had: the fill fails as on a full disk
            os.close(self._fd)
            raise OSError(errno.EAGAIN, f"cannot start a thread: {e}") from e

    async def put(self, chunk: bytes) -> None:
        """Hand a chunk over; waits while too much is queued. Raises the error that stopped
        the thread (a full disk), if one did."""
        self._queue.put(chunk)
        self._queued += len(chunk)
        while self._queued > QUEUED_MAX and self._error is None:
            self._room.clear()
            await self._room.wait()
        if self._error is not None:
            raise self._error

    @property
    def error(self) -> OSError | None:
        """What stopped the thread writing (a full disk), if anything did."""
        return self._error

    async def close(self) -> None:
        """Wait until every chunk handed over is written and reported, or the thread stopped
        on an error."""
        self._queue.put(None)
        await asyncio.shield(self._done)

    def _run(self) -> None:
        unreported = 0
        reported_at = time.monotonic()
        try:
            while True:
                try:
                    # Bytes written but not reported are reported once nothing more comes.
                    chunk = self._queue.get(timeout=REPORT_DELAY if unreported else None)
                except queue.Empty:
                    chunk = b""
                if chunk is None:
                    break
                if chunk and self._error is None:  # after an error, drained: put() raises it
                    try:
                        write_all(self._fd, chunk)
                    except OSError as e:
                        self._error = e
                        self._call(self._room.set)  # a put() waiting for room raises it
                        continue
                    self._hasher.update(chunk)  # releases the GIL: runs beside the loop
                    unreported += len(chunk)
                now = time.monotonic()
                if unreported and (
                    not chunk or unreported >= REPORT_EVERY or now - reported_at >= REPORT_DELAY
                ):
                    self._call(self._progress, unreported)
                    unreported, reported_at = 0, now
        finally:
            os.close(self._fd)
            # After every progress report: the loop runs them in the order they were sent.
            self._call(self._finish, unreported)

    def _call(self, callback: Callable[..., Any], *args: Any) -> None:
        # A loop closed under a running fill (an abrupt shutdown) has nobody left to tell.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def _progress(self, count: int) -> None:
        self._queued -= count
        self._wrote(count)
        self._room.set()

    def _finish(self, unreported: int) -> None:
        if unreported:
            self._progress(unreported)
        if not self._done.done():
            self._done.set_result(None)


def write_all(fd: int, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        view = view[os.write(fd, view) :]
