"""The files in the spool as the upkeep sees them: downloads in progress (counted in the cache's
size) and the debris of writers that died (removed by `mirror gc`).

Every writer holds an exclusive lock on its spool file (a claim's holder on its `.claim`, the
followers of a download a shared one on its `.readers`) for as long as it works on it, so a file
nobody holds, and that nobody has written for a while, is debris. The age matters: a writer
opens its file a moment before it locks it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mirror.storage.layout import CacheLayout


@dataclass(frozen=True, slots=True)
class SpoolFile:
    path: Path
    size: int
    modified: float


class SpoolFiles:
    """Every file in `spool/`, for counting and for removing debris."""

    def __init__(self, layout: CacheLayout) -> None:
        self._dir = layout.spool

    def iter_files(self) -> Iterator[SpoolFile]:
        try:
            entries = list(os.scandir(self._dir))
        except OSError:
            return
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    yield SpoolFile(Path(entry.path), st.st_size, st.st_mtime)

    def is_debris(self, file: SpoolFile, older_than: float) -> bool:
        """Nobody holds it and nobody wrote it since `older_than` (unix time)."""
        if file.modified >= older_than:
            return False
        try:
            fd = os.open(file.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def remove_debris(self, file: SpoolFile, older_than: float) -> bool:
        """Remove it if it is debris, holding its lock meanwhile; True when removed."""
        try:
            fd = os.open(file.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_mtime >= older_than:
                return False
            os.unlink(file.path)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
