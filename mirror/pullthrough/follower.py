"""Following a fill that another process (a worker or replica on this cache directory) runs.

The filler publishes, in its claim on the digest, the spool file it writes and the blob's size;
the follower opens that file and tails it, polling its size. It trusts nothing it did not check:
the spool file must be locked by a live writer or already marked verified (a record left by a
dead filler names a file that is neither), and it follows the spool's one rule: the last byte
only once the file it reads is verified. So it ends a response cleanly only when the bytes it
sent are the verified blob, whatever other fills of the same digest do meanwhile.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator
from functools import partial
from pathlib import Path
from typing import BinaryIO

from mirror.oci.digest import Digest
from mirror.pullthrough.fills import FillFailed
from mirror.storage.claims import (
    POLL_INTERVAL,
    is_claimed,
    is_locked,
    join_readers,
    leave_readers,
    poll,
    read_record,
)
from mirror.storage.spool import is_verified, read_fill_record, readable_end, spool_segments

# A filler publishes right after taking its claim; this is how long that may take.
PUBLISH_WAIT = 5.0


class FollowedFill:
    """A fill run by another process, read through its spool file."""

    def __init__(
        self, digest: Digest, spool: Path, part: Path, final: Path, size: int | None
    ) -> None:
        self.digest = digest
        self.size = size
        self._spool = spool
        self._part = part
        self._final = final

    @classmethod
    async def find(cls, spool: Path, digest: Digest, final: Path) -> FollowedFill | None:
        """The fill of `digest` that another process runs, or None if none runs."""

        async def published() -> tuple[FollowedFill | None] | None:
            # (fill,) once its holder published it; (None,) when nobody holds the claim.
            if not is_claimed(spool, digest.hex):
                return (None,)
            found = _live_fill(spool, digest, final)
            return (found,) if found is not None else None

        settled = await poll(published, PUBLISH_WAIT)
        return settled[0] if settled is not None else None

    async def segments(
        self, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[tuple[BinaryIO, int, int], None]:
        committed = False
        try:
            file = open(self._part, "rb", buffering=0)  # noqa: SIM115, ASYNC230
        except FileNotFoundError:
            # Gone since it was found: committed (a file in blobs/ is verified, whoever
            # wrote it), or failed, and then there is nothing to follow.
            committed = True
            try:
                file = open(self._final, "rb", buffering=0)  # noqa: SIM115, ASYNC230
            except OSError as e:
                raise FillFailed(f"the fill of {self.digest} ended without the blob") from e
        except OSError as e:
            raise FillFailed(f"cannot follow the fill of {self.digest}: {e.strerror}") from e
        try:
            # Counted, so the filler does not take this fill for abandoned; only advisory, so a
            # lack of descriptors for it is no reason to fail the client.
            readers: int | None = join_readers(self._spool, self.digest.hex)
        except OSError:
            readers = None
        try:
            with file:
                limit = partial(self._readable_limit, file.fileno(), committed)
                async for segment in spool_segments(file, start, end, limit):
                    yield segment
        finally:
            if readers is not None:
                leave_readers(self._spool, self.digest.hex, readers)

    async def _readable_limit(self, fd: int, committed: bool, position: int) -> int:
        while True:
            # Verified is read before the size: the size can then only be too small, never
            # include unverified bytes.
            verified = committed or is_verified(fd)
            written = os.fstat(fd).st_size
            if verified and self.size is not None and written != self.size:
                raise FillFailed(f"the fill of {self.digest} has {written} of {self.size} bytes")
            end = readable_end(written, verified)
            if end > position or verified:
                return end
            if not is_locked(fd) and not is_verified(fd):
                # The writer let go without verifying: it failed or died.
                raise FillFailed(f"the fill of {self.digest} failed in another process")
            await asyncio.sleep(POLL_INTERVAL)


def _live_fill(spool: Path, digest: Digest, final: Path) -> FollowedFill | None:
    """The fill the claim's record names, if its spool file is live; None while the holder has
    not published yet (or what is there is a dead filler's record)."""
    found = read_fill_record(spool, read_record(spool, digest.hex))
    if found is None or not found[0].name.startswith(f"{digest.hex}."):
        return None
    part, size = found
    try:
        fd = os.open(part, os.O_RDONLY)
    except OSError:
        return None
    try:
        if not is_locked(fd) and not is_verified(fd):
            return None
    finally:
        os.close(fd)
    return FollowedFill(digest, spool, part, final, size)
