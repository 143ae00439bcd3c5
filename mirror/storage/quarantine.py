"""What `mirror verify` set aside under `quarantine/`: damaged blobs and manifests (with their
sidecars), kept for an operator to look at until `mirror gc` removes them.

Nothing serves them, and they are not cache: the size cap does not count them (evicting good
content to make room for damaged bytes would be backwards); they take room on the disk, which
`--min-free` sees. Their age is their modification time, which verify sets as it moves each
file there.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mirror.storage.layout import CacheLayout


@dataclass(frozen=True, slots=True)
class QuarantinedFile:
    path: Path
    size: int
    since: float  # when verify set it aside (unix time)


class Quarantine:
    """Every file under `quarantine/`, for counting and for removing the old ones."""

    def __init__(self, layout: CacheLayout) -> None:
        self._dir = layout.quarantine

    def iter_files(self) -> Iterator[QuarantinedFile]:
        for directory, _subdirs, names in os.walk(self._dir):
            for name in names:
                path = Path(directory, name)
                with contextlib.suppress(OSError):
                    st = path.lstat()
                    if stat.S_ISREG(st.st_mode):
                        yield QuarantinedFile(path, st.st_size, st.st_mtime)

    def remove(self, file: QuarantinedFile, older_than: float) -> bool:
        """Remove it unless it was set aside at `older_than` (unix time) or later: verify may
        have put a newer damaged copy in its place meanwhile. True when removed."""
        try:
            if file.path.lstat().st_mtime >= older_than:
                return False
            file.path.unlink()
        except OSError:
            return False
        return True
