"""Re-hashing the cache (`mirror verify`): anything whose bytes no longer match its digest is
moved to `quarantine/`, so that the next pull fetches a good copy.

Files are read without counting as a use, and one is quarantined only if it is still the file
that was hashed (a fresh copy may have been committed in its place meanwhile).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mirror.cache.inventory import Stores
from mirror.oci.digest import Digest
from mirror.storage.files import StoredFile

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Checked:
    kind: str  # "blob" or "manifest"
    file: StoredFile
    good: bool
    quarantined: Path | None = None


def verify(stores: Stores, workers: int = 4) -> Iterator[Checked]:
    """Check every blob and manifest, a few at a time (hashing releases the GIL); a manifest
    whose sidecar records no manifest type is as unusable as one damaged."""
    manifests, blobs = stores.manifests, stores.blobs
    jobs: list[_Job] = [
        ("manifest", m, manifests.open_quietly, manifests.quarantine, manifests.has_type)
        for m in manifests.iter_manifests()
    ]
    jobs += [
        ("blob", b, blobs.open_quietly, blobs.quarantine, lambda _: True)
        for b in blobs.iter_blobs()
    ]
    with ThreadPoolExecutor(workers) as pool:
        yield from pool.map(lambda job: _check(*job), jobs)


_Job = tuple[
    str,
    StoredFile,
    Callable[[Digest], BinaryIO],
    Callable[[Digest, int], Path | None],
    Callable[[Digest], bool],
]


def _check(
    kind: str,
    file: StoredFile,
    opener: Callable[[Digest], BinaryIO],
    quarantine: Callable[[Digest, int], Path | None],
    usable: Callable[[Digest], bool],
) -> Checked:
    try:
        with opener(file.digest) as f:
            inode = os.fstat(f.fileno()).st_ino
            hasher = file.digest.hasher()
            while chunk := f.read(CHUNK):
                hasher.update(chunk)
    except OSError:
        return Checked(kind, file, True)  # removed meanwhile: nothing to judge
    if hasher.hexdigest() == file.digest.hex and usable(file.digest):
        return Checked(kind, file, True)
    return Checked(kind, file, False, quarantine(file.digest, inode))
