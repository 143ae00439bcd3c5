"""Blobs stored by digest; a file appears here only by rename after verification."""

from __future__ import annotations

import os
from pathlib import Path

from mirror.oci.digest import Digest
from mirror.storage.layout import CacheLayout


class BlobStore:
    def __init__(self, layout: CacheLayout) -> None:
        self._layout = layout

    def path(self, digest: Digest) -> Path:
        return self._layout.blob(digest)

    def find(self, digest: Digest) -> tuple[Path, int] | None:
        """The committed file and its size, if cached (a stat: cheap enough for the loop)."""
        path = self._layout.blob(digest)
        try:
            return path, path.stat().st_size
        except OSError:
            return None

    def new_spool_file(self, digest: Digest) -> Path:
        return self._layout.spool_file(digest.hex)

    def commit(self, spool_file: Path, digest: Digest) -> Path:
        """Publish a verified spool file: same filesystem, so the rename is atomic."""
        final = self._layout.blob(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(spool_file, final)
        return final
