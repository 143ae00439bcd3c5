"""Spool files: content on its way into the cache, readable by every process while it is written.

A spool file is created and `flock`ed by its writer for the whole of its life, so a file nobody
holds is debris, and a reader can tell a live writer from a dead one. When the writer has checked
every byte against the digest it marks the file verified by taking away its write permission
(`fchmod 0444`): the mark travels with the inode, so a reader holding the file open knows that
what it read was verified wherever the file is renamed to afterwards, and however many other
files of the same name come and go. That is the one rule every reader follows: send every byte of
a verified file, and all but the last byte of any other, so a wrong or short body never ends
cleanly at a client.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


def open_spool(path: Path) -> BinaryIO:
    """Create a spool file and hold its lock for as long as it is open."""
    f = open(path, "xb")  # noqa: SIM115 -- the caller owns and closes it
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        path.unlink(missing_ok=True)
        raise
    return f


def mark_verified(fd: int) -> None:
    """Every byte is written and matches the digest: readers may now send the last one."""
    os.fchmod(fd, _READ_ONLY)


def is_verified(fd: int) -> bool:
    return os.fstat(fd).st_mode & 0o222 == 0


def readable_end(written: int, verified: bool) -> int:
    """How far a reader may send: all once verified, else all but the last byte."""
    return written if verified else max(written - 1, 0)


async def spool_segments(
    file: BinaryIO,
    start: int,
    end: int | None,
    readable_limit: Callable[[int], Awaitable[int]],
) -> AsyncIterator[tuple[BinaryIO, int, int]]:
    """(file, offset, count) runs of [start, end) as `readable_limit(position)` allows them;
    `readable_limit` waits until it can return more than `position`, or returns `position`
    when there is no more (a verified file read to its end)."""
    position = start
    while end is None or position < end:
        limit = await readable_limit(position)
        if end is not None:
            limit = min(limit, end)
        if position >= limit:
            return
        yield file, position, limit - position
        position = limit


def fill_record(part: Path, size: int | None) -> bytes:
    """What a blob's claim publishes for followers: the spool file written, the size expected."""
    return json.dumps({"part": part.name, "size": size}).encode()


def read_fill_record(spool: Path, record: bytes | None) -> tuple[Path, int | None] | None:
    """The spool file and size a claim's record names, or None for anything else."""
    try:
        parsed = json.loads(record or b"")
        part = spool / str(parsed["part"])
        size = None if parsed["size"] is None else int(parsed["size"])
    except (ValueError, KeyError, TypeError):
        return None
    return (part, size) if part.parent == spool else None
