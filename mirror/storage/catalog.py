"""The repositories the cache holds tags of, per registry: what `/v2/_catalog` lists of the
mirrored registries."""

from __future__ import annotations

import os

from mirror.storage.layout import CacheLayout


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
