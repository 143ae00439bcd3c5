"""The cross-process claim on a blob download: `spool/<hex>.fill`, locked by the filling process.

Workers and replicas on one cache directory must fetch each blob once in total. The process that
takes the lock fills; it writes into the lock file the spool file's name and the blob's size once
the upstream answered, so the others can tail that spool file. A lock that can be taken means
nobody is filling (any more): the filler died, failed or finished, and the blob's presence in
`blobs/` tells which.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class FillInfo:
    """What the filler publishes: the spool file it writes and the size it expects."""

    part: str
    size: int | None


def lock_path(spool: Path, name: str) -> Path:
    """`name` is a digest's hex, or another hex name for work that is not a blob."""
    return spool / f"{name}.fill"


class FillLock:
    """Held by the one process that fills a blob."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def try_acquire(cls, spool: Path, name: str) -> FillLock | None:
        path = lock_path(spool, name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)  # whatever a dead filler published is void
        return cls(path, fd)

    def publish(self, part: Path, size: int | None) -> None:
        data = json.dumps({"part": part.name, "size": size}).encode()
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        """Remove the file while still holding it, then let go: the next filler starts clean."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)


def read_fill_info(path: Path) -> FillInfo | None:
    """What the filler published so far; None while it has not (or the file is gone)."""
    try:
        raw = json.loads(path.read_bytes())
        size = raw["size"]
        return FillInfo(str(raw["part"]), None if size is None else int(size))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_filling(path: Path) -> bool:
    """Whether some process holds the lock at `path` right now."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own shared lock at once
    return False
