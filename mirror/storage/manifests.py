"""Manifests stored by digest: the exact bytes plus a sidecar naming their media type."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from cachetools import LRUCache

from mirror.oci.contents import BlobSizes
from mirror.oci.digest import Digest
from mirror.storage.layout import CacheLayout, write_atomically


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: Digest
    media_type: str
    data: bytes


class ManifestStore:
    """Disk is the truth; a bounded in-memory LRU keeps hot manifests off the disk."""

    def __init__(
        self, layout: CacheLayout, sizes: BlobSizes | None = None, memory_bytes: int = 64 << 20
    ) -> None:
        self._layout = layout
        # Told the blob sizes of every manifest that comes off the disk or into the cache.
        self._sizes = sizes
        self._memory: LRUCache[Digest, StoredManifest] = LRUCache(
            maxsize=memory_bytes, getsizeof=lambda m: len(m.data) + 256
        )

    async def get(self, digest: Digest) -> StoredManifest | None:
        found = self._memory.get(digest)
        if found is None:
            found = await asyncio.to_thread(self._read, digest)
            if found is not None:
                self._memory[digest] = found
                self._learn(found)
        return found

    async def put(self, digest: Digest, media_type: str, data: bytes) -> StoredManifest:
        """Store a verified manifest; one stored already stays as it is (content-addressed:
        the bytes are the same, and its media type is not for a later fetch to rewrite)."""
        if (stored := await self.get(digest)) is not None:
            return stored
        manifest = StoredManifest(digest, media_type, data)
        await asyncio.to_thread(self._write, manifest)
        self._memory[digest] = manifest
        self._learn(manifest)
        return manifest

    def _learn(self, manifest: StoredManifest) -> None:
        if self._sizes is not None:
            self._sizes.learn(manifest.data)

    def _read(self, digest: Digest) -> StoredManifest | None:
        path = self._layout.manifest(digest)
        try:
            meta = json.loads(path.with_name(path.name + ".json").read_bytes())
            data = path.read_bytes()
        except (OSError, ValueError):
            return None
        # The bytes were verified before they were stored; checking again on the (rare) disk
        # read protects clients from a file damaged after the fact.
        if Digest.of(data, digest.algorithm) != digest:
            return None
        return StoredManifest(digest, str(meta["mediaType"]), data)

    def _write(self, manifest: StoredManifest) -> None:
        path = self._layout.manifest(manifest.digest)
        # Sidecar first: a manifest file without its sidecar would be unreadable, the reverse
        # is harmless.
        sidecar = json.dumps({"mediaType": manifest.media_type}).encode()
        write_atomically(self._layout, path.with_name(path.name + ".json"), sidecar)
        write_atomically(self._layout, path, manifest.data)
