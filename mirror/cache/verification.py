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
    """Check every blob and manifest, a few at a time (hashing releases the GIL)."""
    jobs: list[tuple[str, StoredFile, Callable[[Digest], BinaryIO], Callable[..., Path | None]]]
    jobs = [
        ("manifest", m, stores.manifests.open_quietly, stores.manifests.quarantine)
        for m in stores.manifests.iter_manifests()
    ]
    jobs += [
        ("blob", b, stores.blobs.open_quietly, stores.blobs.quarantine)
        for b in stores.blobs.iter_blobs()
    ]
    with ThreadPoolExecutor(workers) as pool:
        yield from pool.map(lambda job: _check(*job), jobs)


def _check(
    kind: str,
    file: StoredFile,
    opener: Callable[[Digest], BinaryIO],
    quarantine: Callable[[Digest, int], Path | None],
) -> Checked:
    try:
        with opener(file.digest) as f:
            inode = os.fstat(f.fileno()).st_ino
            hasher = file.digest.hasher()
            while chunk := f.read(CHUNK):
                hasher.update(chunk)
    except OSError:
        return Checked(kind, file, True)  # removed meanwhile: nothing to judge
    if hasher.hexdigest() == file.digest.hex:
        return Checked(kind, file, True)
    return Checked(kind, file, False, quarantine(file.digest, inode))
