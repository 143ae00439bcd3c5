"""How full the cache is, against the limits it is given.

`UsageCounter` is the cache's size in bytes as every process on the cache directory sees it: a
small file they add to under a lock as they store content, which the evicting process sets to
the true figure after each walk of the cache. Reading it costs a few system calls, where a walk
of a large cache costs seconds.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mirror.config import SizeLimit
from mirror.storage.disk import Disk

# Eviction stops this far under the cap, so that it does not run again at the next blob.
LOW_WATER = 0.9


@dataclass(frozen=True, slots=True)
class Room:
    """The most one more blob may take, in bytes: `cap`, the cache's cap (None without one);
    `disk`, what its file system can give it, counting what eviction could free when
    `evicting` (limits are set); `whole_disk`, what it could give were the cache empty."""

    cap: int | None
    disk: int
    evicting: bool = False
    whole_disk: int = 0


class Limits:
    """The cap and the free space to keep, resolved against the cache's file system."""

    def __init__(self, root: Path, max_size: SizeLimit | None, min_free: SizeLimit | None) -> None:
        self._root = root
        self.max_size = max_size
        self.min_free = min_free

    @property
    def active(self) -> bool:
        return self.max_size is not None or self.min_free is not None

    def disk(self) -> Disk:
        return Disk.of(self._root)

    def cap(self, disk: Disk) -> int | None:
        return None if self.max_size is None else self.max_size.resolve(disk.total)

    def keep_free(self, disk: Disk) -> int | None:
        return None if self.min_free is None else self.min_free.resolve(disk.total)

    def room(self, disk: Disk, usage: int | None) -> Room:
        """What one more blob may take: no more than the cap, nor than the disk's free space
        and what eviction could free for it (the cache's `usage`; all the disk holds while
        nobody has counted it), past what must stay free (`min_free`, and at least the disk's
        reserve). Without limits nothing is evicted to make room."""
        keep = max(self.keep_free(disk) or 0, disk.reserve)
        evictable = 0
        if self.active:
            evictable = disk.total - disk.free if usage is None else usage
        return Room(self.cap(disk), disk.free + evictable - keep, self.active, disk.total - keep)

    def excess(self, usage: int, disk: Disk) -> int:
        """Bytes to evict: down to the low-water mark once over the cap, and up to a little
        more than `min_free` once free space is under it; 0 within the limits."""
        need = 0
        cap = self.cap(disk)
        if cap is not None and usage > cap:
            need = usage - int(cap * LOW_WATER)
        keep_free = self.keep_free(disk)
        if keep_free is not None and disk.free < keep_free:
            need = max(need, int(keep_free / LOW_WATER) - disk.free)
        return need


class UsageCounter:
    """The shared count of bytes in the cache (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def add(self, delta: int) -> int | None:
        """Add `delta`; the new total, or None when nobody has counted the cache yet."""
        return self._update(lambda old: None if old is None else max(0, old + delta))

    def set(self, total: int) -> int:
        self._update(lambda _old: total)
        return total

    def _update(self, change: Callable[[int | None], int | None]) -> int | None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            text = os.pread(fd, 64, 0)
            old = int(text) if text.strip().isdigit() else None
            new = change(old)
            if new != old:
                data = b"" if new is None else str(new).encode()
                os.pwrite(fd, data, 0)
                os.ftruncate(fd, len(data))
            return new
        finally:
            os.close(fd)
