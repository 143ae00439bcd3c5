"""The file system the cache lives on: its size and free space, and the room the cache always
leaves on it for its own small writes (tag records, metadata, the spool's first bytes)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Room left on the disk beyond any body the cache takes in (a push, or a download), so that its
# own writes still fit: a sixteenth of the file system when that is less.
DISK_RESERVE = 64 << 20


@dataclass(frozen=True, slots=True)
class Disk:
    total: int
    free: int  # available to an unprivileged writer (what a fill can use)

    @classmethod
    def of(cls, path: Path) -> Disk:
        st = os.statvfs(path)
        return cls(st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)

    @property
    def reserve(self) -> int:
        return min(DISK_RESERVE, self.total // 16)
