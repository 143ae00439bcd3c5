"""Following a fill that another process (a worker or replica on this cache directory) runs.

The follower learns the spool file and size from the filler's lock file and tails the spool
file, polling its size; like the filler's own readers it holds back the last byte until the blob
is committed, and fails if the filler lets go of its lock without committing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import BinaryIO

from mirror.errors import UpstreamError
from mirror.oci.digest import Digest
from mirror.pullthrough.fills import FillFailed, spool_segments
from mirror.storage.fill_lock import FillInfo, is_filling, read_fill_info

POLL = 0.02


class FillerGone(UpstreamError):
    """The other process stopped filling before it published anything; try again."""


class FollowedFill:
    def __init__(self, digest: Digest, lock: Path, spool: Path, final: Path, wait: float) -> None:
        self.digest = digest
        self.size: int | None = None
        self._lock = lock
        self._spool = spool
        self._final = final
        self._wait = wait
        self._info: FillInfo | None = None

    async def started(self) -> None:
        """Wait for the filler to publish what it writes (its upstream answered)."""
        deadline = asyncio.get_running_loop().time() + self._wait
        while (info := read_fill_info(self._lock)) is None:
            if self._final.exists() or not is_filling(self._lock):
                # Finished before we looked, or failed: either way, start over.
                raise FillerGone(f"the fill of {self.digest} ended before it could be followed")
            if asyncio.get_running_loop().time() > deadline:
                raise UpstreamError(f"the fill of {self.digest} did not start in time")
            await asyncio.sleep(POLL)
        self._info = info
        self.size = info.size

    async def segments(
        self, start: int = 0, end: int | None = None
    ) -> AsyncIterator[tuple[BinaryIO, int, int]]:
        assert self._info is not None, "started() first"
        try:
            file = open(self._spool / self._info.part, "rb", buffering=0)  # noqa: SIM115, ASYNC230
        except OSError as e:
            raise FillFailed(f"cannot follow the fill of {self.digest}: {e.strerror}") from e
        with file:
            limit = partial(self._readable_limit, file.fileno())
            async for segment in spool_segments(file, start, end, limit):
                yield segment

    async def _readable_limit(self, fd: int, position: int) -> int:
        """How far reading may go: all of it once committed, else all but the last byte."""
        while True:
            # Committed is checked before the size, so a commit between the two reads can
            # only make this return less than it could, never unverified bytes.
            committed = self._final.exists()
            written = os.fstat(fd).st_size
            if committed:
                return written
            if written - 1 > position:
                return written - 1
            if not is_filling(self._lock) and not self._final.exists():
                raise FillFailed(f"the fill of {self.digest} failed in another process")
            await asyncio.sleep(POLL)
