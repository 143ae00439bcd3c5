"""Manifests and tag records in the bucket.

Manifests live at `PREFIX/manifests/sha256/<hex>`, their exact bytes with their media type as
the object's `Content-Type`; tag records at `PREFIX/tags/<registry>/<repo>/_tags/<tag>` and tag
lists at `PREFIX/tags/<registry>/<repo>/_list`, in the JSON of the cache directory's own files.
Each is written whole by one PUT (S3 never shows a partly written object), and only once its
content was verified; a manifest read back is checked against its digest again.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

from mirror.oci.digest import Digest
from mirror.storage.manifests import StoredManifest
from mirror.storage.s3.bucket import Bucket
from mirror.storage.tags import TagRecord, parse_record, parse_tag_list, tag_list_document

_JSON = "application/json"


class S3Manifests:
    """The bucket's manifests (a `ManifestBackend`)."""

    def __init__(self, bucket: Bucket) -> None:
        self._bucket = bucket

    def _key(self, digest: Digest) -> str:
        return self._bucket.key(f"manifests/{digest.algorithm}/{digest.hex}")

    async def get(self, digest: Digest) -> StoredManifest | None:
        found = await self._bucket.get_bytes(self._key(digest))
        return None if found is None else StoredManifest.read_back(digest, found[1], found[0])

    async def put(self, digest: Digest, media_type: str, data: bytes) -> StoredManifest:
        await self._bucket.put(self._key(digest), data, media_type)
        return StoredManifest(digest, media_type, data)

    async def remove(self, digest: Digest) -> bool:
        """Remove the manifest; True when it was there."""
        return await self._bucket.remove(self._key(digest))


class S3Tags:
    """The bucket's tag records and tag lists (a `TagBackend`)."""

    def __init__(self, bucket: Bucket) -> None:
        self._bucket = bucket

    def _key(self, upstream: str, repo: str, name: str) -> str:
        # Names and repositories are validated before they get here (no "..", no empty parts).
        return self._bucket.key(f"tags/{upstream}/{repo}/{name}")

    async def get(self, upstream: str, repo: str, tag: str) -> TagRecord | None:
        found = await self._bucket.get_bytes(self._key(upstream, repo, f"_tags/{tag}"))
        return None if found is None else parse_record(found[0])

    async def put(
        self, upstream: str, repo: str, tag: str, digest: Digest, media_type: str
    ) -> None:
        record = TagRecord(str(digest), media_type, time.time())
        data = json.dumps(asdict(record)).encode()
        await self._bucket.put(self._key(upstream, repo, f"_tags/{tag}"), data, _JSON)

    async def remove(self, upstream: str, repo: str, tag: str, digest: Digest) -> bool:
        """Remove a tag record unless it moved to another digest meanwhile (or is gone); True
        when it was removed."""
        key = self._key(upstream, repo, f"_tags/{tag}")
        found = await self._bucket.get_bytes(key)
        record = None if found is None else parse_record(found[0])
        if record is None or record.digest != str(digest):
            return False
        await self._bucket.delete(key)
        return True

    async def get_list(self, upstream: str, repo: str) -> list[str] | None:
        found = await self._bucket.get_bytes(self._key(upstream, repo, "_list"))
        return None if found is None else parse_tag_list(found[0])

    async def put_list(self, upstream: str, repo: str, tags: list[str]) -> None:
        """Store the list; one too long to keep is not, and the list kept before goes."""
        key = self._key(upstream, repo, "_list")
        data = tag_list_document(tags)
        if data is None:
            await self._bucket.delete(key)  # DeleteObject of no object succeeds
        else:
            await self._bucket.put(key, data, _JSON)
