"""An image's blobs as files for `mirror export` with `--storage s3://…`: the cache directory's
own where it has them, else copies of the bucket's in a staging directory beside the archive,
checked against their digests as they are copied (the archive is written from files)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from mirror.oci.digest import Digest
from mirror.storage.blobs import BlobStore
from mirror.storage.shared_blobs import SharedBlobs


class StagedBlobs:
    """A `BlobFiles` reading through the cache directory to the bucket behind it."""

    def __init__(self, local: BlobStore, shared: SharedBlobs, directory: Path) -> None:
        self._local = local
        self._shared = shared
        self._directory = directory

    async def find(self, digest: Digest) -> tuple[Path, int] | None:
        """The blob's file and size (StorageUnavailable when the bucket cannot be read or its
        copy is damaged)."""
        found = self._local.find(digest)
        if found is not None:
            return found
        size = await self._shared.find(digest)
        if size is None:
            return None
        path = self._directory / f"{digest.algorithm}-{digest.hex}"
        if not path.exists():
            await self._copy(digest, size, path)
        return path, size

    async def _copy(self, digest: Digest, size: int, path: Path) -> None:
        part = path.with_name(path.name + ".part")
        try:
            with await asyncio.to_thread(part.open, "wb") as f:
                # `read` holds back the last chunk until the whole blob matched its digest.
                async with contextlib.aclosing(self._shared.read(digest, 0, size, size)) as chunks:
                    async for chunk in chunks:
                        await asyncio.to_thread(f.write, chunk)
            part.rename(path)
        finally:
            part.unlink(missing_ok=True)
