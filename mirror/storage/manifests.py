"""Manifests stored by digest: the exact bytes plus a sidecar naming their media type."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeGuard

from cachetools import LRUCache

from mirror import log
from mirror.errors import StorageUnavailable
from mirror.oci.digest import Digest
from mirror.oci.mediatypes import MANIFEST_TYPES
from mirror.storage import files
from mirror.storage.backend import ManifestBackend
from mirror.storage.files import StoredFile
from mirror.storage.layout import CacheLayout, write_atomically


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: Digest
    media_type: str
    data: bytes

    @classmethod
    def read_back(cls, digest: Digest, media_type: object, data: bytes) -> StoredManifest | None:
        """A manifest as read back from where it is kept; None when it cannot be served and
        must be fetched (and written) again: its bytes damaged after they were verified, or
        its type not one a manifest may have (damaged, or kept by a version that took any)."""
        if Digest.of(data, digest.algorithm) != digest or not _is_manifest_type(media_type):
            return None
        return cls(digest, media_type, data)


class ManifestStore:
    """Disk is the truth, or a `shared` store behind it (the bucket), whose manifests are kept
    on disk once read; a bounded in-memory LRU keeps hot manifests off the disk.

    `on_store(digest, size)` hears of every manifest written, with its bytes on disk."""

    def __init__(
        self,
        layout: CacheLayout,
        memory_bytes: int = 64 << 20,
        on_store: Callable[[Digest, int], None] | None = None,
        shared: ManifestBackend | None = None,
    ) -> None:
        self._layout = layout
        self._shared = shared
        self._on_store = on_store
        self._memory: LRUCache[Digest, StoredManifest] = LRUCache(
            maxsize=memory_bytes, getsizeof=lambda m: len(m.data) + 256
        )

    async def get(self, digest: Digest) -> StoredManifest | None:
        found = self._memory.get(digest)
        if found is None:
            found = await asyncio.to_thread(self._read, digest)
            if found is None and self._shared is not None:
                found = await self._shared.get(digest)
                if found is not None:
                    with contextlib.suppress(OSError):  # a copy: the shared store has it
                        await self._keep(found)
            if found is not None:
                self._memory[digest] = found
        return found

    async def put(self, digest: Digest, media_type: str, data: bytes) -> StoredManifest:
        """Store a verified manifest; one stored already stays as it is (content-addressed:
        the bytes are the same, and its media type is not for a later fetch to rewrite)."""
        if (stored := await self.get(digest)) is not None:
            return stored
        manifest = StoredManifest(digest, media_type, data)
        if self._shared is not None:
            try:
                await self._shared.put(digest, media_type, data)
            except StorageUnavailable as e:
                # The copy on disk still serves this process.
                log.warn_once("cannot store manifests in the object store", error=e.message)
        await self._keep(manifest)
        self._memory[digest] = manifest
        return manifest

    async def _keep(self, manifest: StoredManifest) -> None:
        """Write a manifest to disk, and count it."""
        await asyncio.to_thread(self._write, manifest)
        if self._on_store is not None:
            size = len(manifest.data) + len(_sidecar(manifest.media_type))
            self._on_store(manifest.digest, size)

    def _read(self, digest: Digest) -> StoredManifest | None:
        path = self._layout.manifest(digest)
        media_type = _recorded_type(path)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        # Checked again on the (rare) disk read, which protects clients from a file damaged
        # after the fact.
        return StoredManifest.read_back(digest, media_type, data)

    def has_type(self, digest: Digest) -> bool:
        """Whether the manifest's sidecar records a manifest type: without one the manifest
        cannot be served (it is fetched again, or missing when offline)."""
        return _is_manifest_type(_recorded_type(self._layout.manifest(digest)))

    def _write(self, manifest: StoredManifest) -> None:
        path = self._layout.manifest(manifest.digest)
        # Sidecar first: a manifest file without its sidecar would be unreadable, the reverse
        # is harmless.
        write_atomically(self._layout, _sidecar_path(path), _sidecar(manifest.media_type))
        write_atomically(self._layout, path, manifest.data)

    def iter_manifests(self) -> Iterator[StoredFile]:
        """Every stored manifest, its size counting the sidecar (a walk: for upkeep only)."""
        for digest, path, st in files.walk_sharded(self._layout.root / "manifests"):
            try:
                sidecar = _sidecar_path(path).stat().st_size
            except OSError:
                sidecar = 0
            yield StoredFile(digest, path, st.st_size + sidecar, files.last_used(st))

    def open_quietly(self, digest: Digest) -> BinaryIO:
        """Open the manifest to re-read it, without counting as a use."""
        return os.fdopen(files.open_quietly(self._layout.manifest(digest)), "rb")

    def touch(self, digest: Digest, at: float) -> None:
        files.touch(self._layout.manifest(digest), at)

    def last_used(self, digest: Digest) -> float | None:
        try:
            return files.last_used(self._layout.manifest(digest).stat())
        except OSError:
            return None

    def forget(self, digest: Digest) -> None:
        """Drop a removed manifest from memory (on the event loop: the LRU is not thread-safe)."""
        self._memory.pop(digest, None)

    def remove(self, digest: Digest) -> bool:
        """Remove a manifest from disk (the bytes, then the sidecar); True when it was there."""
        path = self._layout.manifest(digest)
        try:
            path.unlink()
        except OSError:
            return False
        with contextlib.suppress(OSError):
            _sidecar_path(path).unlink()
        return True

    def quarantine(self, digest: Digest, inode: int) -> Path | None:
        """Move a damaged manifest (and its sidecar) to `quarantine/manifests/`."""
        path = self._layout.manifest(digest)
        dest = self._layout.quarantined("manifests", digest)
        if not files.quarantine(path, dest, inode):
            return None
        with contextlib.suppress(OSError):
            sidecar = _sidecar_path(dest)
            _sidecar_path(path).replace(sidecar)
            os.utime(sidecar)  # set aside now, as the manifest was (`storage.quarantine`)
        return dest


def _sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _is_manifest_type(media_type: object) -> TypeGuard[str]:
    """Whether a recorded media type is one a manifest may have (what a damaged record holds
    may be anything JSON gives: a list, a number)."""
    return isinstance(media_type, str) and media_type in MANIFEST_TYPES


def _recorded_type(path: Path) -> object:
    """What the sidecar of the manifest at `path` gives as its media type (anything, or None
    when the sidecar is missing or not a JSON object)."""
    try:
        meta = json.loads(_sidecar_path(path).read_bytes())
    except (OSError, ValueError):
        return None
    return meta.get("mediaType") if isinstance(meta, dict) else None


def _sidecar(media_type: str) -> bytes:
    return json.dumps({"mediaType": media_type}).encode()
