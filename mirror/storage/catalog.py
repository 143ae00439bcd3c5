"""The repositories the cache holds tags of, per registry: what `/v2/_catalog` lists of the
mirrored registries; and the stamp that tells each process when that listing changed."""

from __future__ import annotations

import contextlib
import os

from mirror.storage.layout import CacheLayout

_TOKEN_SIZE = 16


class CatalogStamp:
    """A token in `<cache-dir>/catalog` that every change a catalog walk could see replaces:
    a process keeps its listing while the token it read before walking is still there, and
    every process on the cache directory sees every other's changes. Random, so that no two
    changes, by whichever process, leave the same token."""

    def __init__(self, layout: CacheLayout) -> None:
        self._path = layout.catalog

    def read(self) -> bytes:
        """The token now (empty before the first change): one small read, cheap enough for
        the event loop."""
        try:
            with open(self._path, "rb") as f:
                return f.read(_TOKEN_SIZE)
        except OSError:
            return b""

    def change(self) -> None:
        """Replace the token, after a change is on disk (blocking, but one small write). A
        token of fixed size overwritten in place: a reader that catches it half written sees a
        token no walk was made under, and only walks once more."""
        # A full disk must not fail the write this follows (only the file's creation needs a
        # block): the listing then shows the change with the next one.
        with contextlib.suppress(OSError):
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, os.urandom(_TOKEN_SIZE), 0)
            finally:
                os.close(fd)


def cached_repositories(layout: CacheLayout, registry: str) -> list[str]:
    """Every repository of `registry` with a tag record or a stored tag list, sorted
    (blocking: a walk of `tags/<registry>/`)."""
    top = layout.root / "tags" / registry
    found = []
    for directory, subdirs, files in os.walk(top):
        if "_list" in files or (
            "_tags" in subdirs and _has_entries(os.path.join(directory, "_tags"))
        ):
            found.append(os.path.relpath(directory, top))
        # `_tags` holds tag files, never repositories (no repository component starts with _).
        subdirs[:] = [d for d in subdirs if not d.startswith("_")]
    return sorted(found)


def _has_entries(directory: str) -> bool:
    try:
        with os.scandir(directory) as entries:
            return next(entries, None) is not None
    except OSError:
        return False
