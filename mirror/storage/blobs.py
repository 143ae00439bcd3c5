"""Blobs stored by digest; a file appears here only by rename after verification."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from mirror.oci.digest import Digest
from mirror.storage import files
from mirror.storage.files import ReadLease, StoredFile
from mirror.storage.layout import CacheLayout


class BlobStore:
    """The blobs on disk; `on_commit(digest, size)` hears of every blob that becomes visible."""

    def __init__(
        self, layout: CacheLayout, on_commit: Callable[[Digest, int], None] | None = None
    ) -> None:
        self._layout = layout
        self._on_commit = on_commit

    def path(self, digest: Digest) -> Path:
        return self._layout.blob(digest)

    def find(self, digest: Digest) -> tuple[Path, int] | None:
        """The committed file and its size, if cached (a stat: cheap enough for the loop)."""
        path = self._layout.blob(digest)
        try:
            return path, path.stat().st_size
        except OSError:
            return None

    def open_cached(
        self, digest: Digest, *, quietly: bool = False
    ) -> tuple[Path, int, ReadLease] | None:
        """The committed file, its size and a lease that keeps it from removal until released
        (a few system calls: cheap enough for the loop); `quietly`: for the cache's own reads,
        which are no use of it."""
        path = self._layout.blob(digest)
        found = files.lease(path, quietly=quietly)
        return None if found is None else (path, found[1], found[0])

    def new_spool_file(self, digest: Digest) -> Path:
        return self._layout.spool_file(digest.hex)

    def commit(self, spool_file: Path, digest: Digest) -> Path:
        """Publish a verified spool file: same filesystem, so the rename is atomic."""
        final = self._layout.blob(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(spool_file, final)
        if self._on_commit is not None:
            with contextlib.suppress(OSError):  # the commit is done: nothing may undo it
                self._on_commit(digest, final.stat().st_size)
        return final

    def iter_blobs(self) -> Iterator[StoredFile]:
        """Every committed blob (a walk of the tree: for upkeep, not for requests)."""
        for digest, path, st in files.walk_sharded(self._layout.root / "blobs"):
            yield StoredFile(digest, path, st.st_size, files.last_used(st))

    def touch(self, digest: Digest, at: float) -> None:
        files.touch(self._layout.blob(digest), at)

    def age(self, digest: Digest) -> None:
        files.age(self._layout.blob(digest))

    def remove(self, digest: Digest) -> bool:
        """Remove a blob unless some process is sending it; True when it is gone."""
        return files.remove_unless_read(self._layout.blob(digest))

    def open_quietly(self, digest: Digest) -> BinaryIO:
        """Open the blob to re-read it, without counting as a use."""
        return os.fdopen(files.open_quietly(self._layout.blob(digest)), "rb")

    def quarantine(self, digest: Digest, inode: int) -> Path | None:
        """Move a damaged blob to `quarantine/blobs/`, so the next pull fetches a good copy."""
        dest = self._layout.quarantined("blobs", digest)
        return dest if files.quarantine(self._layout.blob(digest), dest, inode) else None
