"""Where each kind of file lives under the cache directory (design.md §3).

Every path is built from validated names and digests only, so no request can address a file
outside the cache directory.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from pathlib import Path

from mirror.oci.digest import Digest
from mirror.storage.spool import open_spool


class CacheLayout:
    """The directory tree; `prepare()` creates it and clears spool debris from a previous run."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.spool = self.root / "spool"
        # Tag freshness shared by the processes on this directory (mirror/meta/directory.py).
        self.fresh = self.root / "fresh"
        # What `mirror verify` found damaged (mirror/storage/quarantine.py).
        self.quarantine = self.root / "quarantine"
        # The token that tells each process its catalog listing is out of date
        # (mirror/storage/catalog.py).
        self.catalog = self.root / "catalog"

    def prepare(self) -> None:
        """Create the tree and remove spool debris.

        A crash, kill or full disk can only ever leave files in spool/. Every writer holds an
        exclusive lock on its spool file, so a file nobody holds is debris, while the files of
        other live workers or replicas sharing this directory are left alone.
        """
        for sub in ("blobs", "manifests", "tags", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for entry in self.spool.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
                continue
            try:
                with open(entry, "rb") as f:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    entry.unlink()
            except OSError:
                continue  # locked by a live writer, or already gone

    def blob(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex[:2] / digest.hex

    def manifest(self, digest: Digest) -> Path:
        return self.root / "manifests" / digest.algorithm / digest.hex[:2] / digest.hex

    def quarantined(self, kind: str, digest: Digest) -> Path:
        """Where a damaged file of `kind` ("blobs" or "manifests") is set aside."""
        return self.quarantine / kind / digest.algorithm / digest.hex

    def tag(self, upstream: str, repo: str, tag: str) -> Path:
        return self.tags_of(upstream, repo) / tag

    def tags_of(self, upstream: str, repo: str) -> Path:
        # Tags live in a `_tags` directory: no repository component can be named that (the name
        # grammar starts components with [a-z0-9]), so a tag file never collides with a
        # deeper repository's directory.
        return self.root / "tags" / upstream / repo / "_tags"

    def tag_list(self, upstream: str, repo: str) -> Path:
        """The repository's last tag list from its upstream (`_list`, beside `_tags`)."""
        return self.root / "tags" / upstream / repo / "_list"

    def spool_file(self, label: str) -> Path:
        # Unique per writer, so two writers never share a spool file.
        return self.spool / f"{label}.{uuid.uuid4().hex}.part"


def write_atomically(layout: CacheLayout, final: Path, data: bytes) -> None:
    """Write small content via the spool, flushed to disk, then renamed into place."""
    part = layout.spool_file(final.name)
    try:
        with open_spool(part) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, final)
    finally:
        part.unlink(missing_ok=True)
