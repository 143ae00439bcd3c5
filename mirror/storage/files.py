"""File operations behind the cache's upkeep: recency kept in access times, read leases, safe
removal, and walking the digest-sharded trees.

Recency lives in each file's access time (`st_atime`), set explicitly when content is used, so it
survives restarts and is shared by every process on the cache directory without any other
store. The modification time is left alone: aiohttp derives a blob's `ETag` and `Last-Modified`
from it, and those must not change while a client resumes a download with `If-Range`.

Readers of a committed blob hold a shared `flock` on it while they send it; removal takes the
exclusive lock without waiting and skips a file somebody reads. An exclusive lock on a file under
`blobs/` is only ever held for a few system calls (an unlink, or the close that follows a commit),
so a reader may wait for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mirror.errors import DigestInvalid
from mirror.oci.digest import Digest

# Reading with O_NOATIME keeps the cache's own reads (gc, verify) from counting as use; the
# kernel allows it only to the file's owner, so other readers fall back to a plain open.
_NOATIME = getattr(os, "O_NOATIME", 0)


@dataclass(frozen=True, slots=True)
class StoredFile:
    """Committed content: its digest, bytes stored, and when it was last used (unix time);
    `path` is the file in a cache directory, None for an object in a bucket (whose key the
    digest names)."""

    digest: Digest
    path: Path | None
    size: int
    last_used: float


def last_used(st: os.stat_result) -> float:
    """When a file was last used: read, touched, or written (commits keep their write time)."""
    return max(st.st_atime, st.st_mtime)


def walk_sharded(root: Path) -> Iterator[tuple[Digest, Path, os.stat_result]]:
    """Every `<root>/<algorithm>/<xx>/<hex>` file with a valid digest for a name; anything else
    (sidecars, stray files) is skipped, and files that vanish while walking are left out."""
    for algorithm in _subdirs(root):
        for shard in _subdirs(algorithm):
            with contextlib.suppress(OSError), os.scandir(shard) as entries:
                for entry in entries:
                    if "." in entry.name:
                        continue
                    try:
                        digest = Digest.parse(f"{algorithm.name}:{entry.name}")
                        st = entry.stat(follow_symlinks=False)
                    except (DigestInvalid, OSError):
                        continue
                    if digest.hex[:2] == shard.name and _is_regular(st):
                        yield digest, Path(entry.path), st


def _subdirs(path: Path) -> list[Path]:
    try:
        with os.scandir(path) as entries:
            return sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def _is_regular(st: os.stat_result) -> bool:
    return (st.st_mode & 0o170000) == 0o100000


def touch(path: Path, at: float) -> None:
    """Record a use at `at`: the access time only (see the module docstring)."""
    try:
        st = path.stat()
        if st.st_atime < at:
            os.utime(path, ns=(int(at * 1e9), st.st_mtime_ns))
    except OSError:
        pass  # removed meanwhile: nothing to remember


def age(path: Path) -> None:
    """Forget every use of a file, so the next collection takes it at once."""
    with contextlib.suppress(OSError):
        os.utime(path, ns=(0, 0))


class ReadLease:
    """A shared lock on a committed file, held while it is sent: removal skips it meanwhile."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def open(self) -> BinaryIO:
        """The leased file, to read (closing it leaves the lease as it is)."""
        assert self._fd is not None, "released"
        return os.fdopen(self._fd, "rb", buffering=0, closefd=False)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        self.release()


def lease(path: Path, *, quietly: bool = False) -> tuple[ReadLease, int] | None:
    """Take a read lease on `path`: (lease, size), or None when the file is gone (or going);
    `quietly`: reading it does not count as a use (see `open_quietly`)."""
    try:
        fd = open_quietly(path) if quietly else os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if st.st_nlink == 0:  # removed between our open and our lock
        os.close(fd)
        return None
    return ReadLease(fd), st.st_size


def remove_unless_read(path: Path) -> bool:
    """Unlink `path` unless a reader holds a lease on it; True when it was removed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_nlink == 0:
            return False  # removed by someone else meanwhile
        os.unlink(path)
        return True
    except OSError:
        return False  # BlockingIOError: somebody reads it
    finally:
        os.close(fd)


def open_quietly(path: Path) -> int:
    """Open for reading without marking the file used, where the kernel allows it."""
    try:
        return os.open(path, os.O_RDONLY | _NOATIME)
    except PermissionError:
        return os.open(path, os.O_RDONLY)


def quarantine(path: Path, dest: Path, expected_inode: int) -> bool:
    """Move a damaged file out of the cache, unless it was replaced since it was checked; its
    modification time becomes the moment it was set aside (`mirror gc` goes by it)."""
    try:
        if path.stat().st_ino != expected_inode:
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, dest)
    except OSError:
        return False
    with contextlib.suppress(OSError):
        os.utime(dest)
    return True
