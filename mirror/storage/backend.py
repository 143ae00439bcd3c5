"""What a store of the cache's content offers, whatever keeps it: the shapes the policy code
(`pullthrough/`) reads and writes through, and where an object store plugs in.

The cache directory is always there: downloads spool and verify on it, and cached blobs go out
from it by `sendfile`. So the file-system stores are the first tier and need no wrapping: a
manifest or tag store (`ManifestStore`, `TagStore`) is itself a `ManifestBackend` or
`TagBackend`, and may have a shared one behind it (the bucket), asked for what the directory
lacks and told of what it stores. Blobs are different: the local `BlobStore` serves hits with
sendfile and read leases, and a `BlobBackend` is only ever asked for what is not on local disk,
so a hit on the file system pays nothing for it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, BinaryIO, Protocol

from mirror.oci.digest import Digest

if TYPE_CHECKING:
    from mirror.storage.manifests import StoredManifest
    from mirror.storage.tags import TagRecord


class BlobBackend(Protocol):
    """Blobs by digest in a store shared by every replica (an S3 bucket)."""

    async def stat(self, digest: Digest) -> int | None:
        """The blob's size, or None when the store does not hold it."""
        ...

    def read(self, digest: Digest, start: int, end: int) -> AsyncGenerator[bytes, None]:
        """Bytes [start, end) of the blob, as they arrive."""
        ...

    async def publish(self, file: BinaryIO, digest: Digest, size: int) -> None:
        """Store the verified blob read from `file`, visible only once it is all there."""
        ...

    async def url(self, digest: Digest) -> str:
        """A short-lived URL any client can GET the blob from, with no credentials."""
        ...

    async def remove(self, digest: Digest) -> bool:
        """Remove the blob; True when it was there."""
        ...

    def iterate(self) -> AsyncIterator[tuple[Digest, int]]:
        """Every blob held, with its size."""
        ...


class ManifestBackend(Protocol):
    """Manifests by digest: their exact bytes and media type."""

    async def get(self, digest: Digest) -> StoredManifest | None: ...

    async def put(self, digest: Digest, media_type: str, data: bytes) -> StoredManifest: ...


class TagBackend(Protocol):
    """Tag records (tag → digest, media type, when fetched) and each repository's tag list."""

    async def get(self, upstream: str, repo: str, tag: str) -> TagRecord | None: ...

    async def put(
        self, upstream: str, repo: str, tag: str, digest: Digest, media_type: str
    ) -> None: ...

    async def get_list(self, upstream: str, repo: str) -> list[str] | None: ...

    async def put_list(self, upstream: str, repo: str, tags: list[str]) -> None: ...
