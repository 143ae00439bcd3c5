"""Blobs in the bucket, at `PREFIX/blobs/sha256/<hex>`.

A blob reaches its final key only whole and verified: the local fill has checked every byte
against the digest before it is published, the upload hashes what it reads of the local copy
again (which may have been damaged since, or predate the bucket), and it goes first to a key of
its own under
`PREFIX/uploads/` (in parts, for a big blob), then is copied to the final key in one step of the
store. A failed upload deletes its temporary key or aborts its multipart upload, so nothing is
left half-written anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, BinaryIO

from mirror.errors import DigestInvalid, StorageUnavailable
from mirror.oci.digest import Digest
from mirror.storage.s3.bucket import Bucket, translated

if TYPE_CHECKING:
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

# Parts of a multipart upload (S3 takes 5 MiB to 5 GiB, at most 10,000 of them: 80 GiB here).
PART_SIZE = 8 << 20
# The most a single CopyObject copies; a bigger blob is uploaded in parts to its final key
# directly, where it appears only when the upload is completed.
COPY_LIMIT = 5 << 30
# How long a pre-signed URL of a redirect stays valid: long enough to start the download.
URL_EXPIRY = 300
_BLOBS = "blobs/"
_OCTETS = "application/octet-stream"


class S3Blobs:
    """The bucket's blobs (a `BlobBackend`)."""

    def __init__(self, bucket: Bucket) -> None:
        self._bucket = bucket

    def _key(self, digest: Digest) -> str:
        return self._bucket.key(f"{_BLOBS}{digest.algorithm}/{digest.hex}")

    async def stat(self, digest: Digest) -> int | None:
        key = self._key(digest)
        found = await self._bucket.head(key)
        if found is None:
            return None
        if "ContentLength" not in found:
            raise StorageUnavailable(f"the object store answered no length for {key}")
        return int(found["ContentLength"])

    def read(self, digest: Digest, start: int, end: int) -> AsyncGenerator[bytes, None]:
        return self._bucket.stream(self._key(digest), start, end)

    async def url(self, digest: Digest) -> str:
        key = self._key(digest)
        with translated(key):
            return await self._bucket.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self._bucket.name, "Key": key},
                ExpiresIn=URL_EXPIRY,
            )

    async def publish(self, file: BinaryIO, digest: Digest, size: int) -> None:
        final = self._key(digest)
        hasher = digest.hasher()
        if size > COPY_LIMIT:
            await self._upload_parts(file, final, size, hasher, digest)
            return
        temporary = self._bucket.key(f"uploads/{uuid.uuid4().hex}")
        try:
            if size <= PART_SIZE:
                data = await _read(file, size, 0, hasher, key=final)
                _check(hasher, digest, final)
                await self._bucket.put(temporary, data, _OCTETS)
            else:
                await self._upload_parts(file, temporary, size, hasher, digest)
            with translated(final):
                await self._bucket.client.copy_object(
                    Bucket=self._bucket.name,
                    Key=final,
                    CopySource={"Bucket": self._bucket.name, "Key": temporary},
                )
        finally:
            await asyncio.shield(self._forget(temporary))

    async def _forget(self, key: str) -> None:
        # If the store is down, an `uploads/` lifecycle rule removes what is left.
        with contextlib.suppress(StorageUnavailable):
            await self._bucket.delete(key)

    async def _upload_parts(
        self, file: BinaryIO, key: str, size: int, hasher: hashlib._Hash, digest: Digest
    ) -> None:
        """Upload in parts, completed only if what was read hashes to `digest`."""
        client, bucket = self._bucket.client, self._bucket.name
        with translated(key):
            upload = (await client.create_multipart_upload(Bucket=bucket, Key=key))["UploadId"]
        try:
            parts: list[CompletedPartTypeDef] = []
            for number, offset in enumerate(range(0, size, PART_SIZE), start=1):
                data = await _read(file, min(PART_SIZE, size - offset), offset, hasher, key=key)
                with translated(key):
                    part = await client.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=data
                    )
                parts.append({"ETag": part["ETag"], "PartNumber": number})
            _check(hasher, digest, key)
            with translated(key):
                await client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            await asyncio.shield(self._abort(key, upload))
            raise

    async def _abort(self, key: str, upload: str) -> None:
        # If the store is down, an `uploads/` lifecycle rule aborts what is left.
        with contextlib.suppress(StorageUnavailable):
            await self._bucket.abort(key, upload)

    async def remove(self, digest: Digest) -> bool:
        return await self._bucket.remove(self._key(digest))

    async def iterate(self) -> AsyncIterator[tuple[Digest, int]]:
        async for key, size in self._bucket.list(_BLOBS):
            try:
                yield (
                    Digest.parse(self._bucket.relative(key)[len(_BLOBS) :].replace("/", ":")),
                    size,
                )
            except DigestInvalid:
                continue  # not ours


async def _read(
    file: BinaryIO, count: int, offset: int, hasher: hashlib._Hash, *, key: str
) -> bytes:
    """`count` bytes of the local copy from `offset`, hashed, off the event loop; all of them,
    or the upload stops (a short read must never become a short object)."""

    def read() -> bytes:
        data = os.pread(file.fileno(), count, offset)
        hasher.update(data)
        return data

    data = await asyncio.to_thread(read)
    if len(data) != count:
        raise StorageUnavailable(f"the local copy of {key} ended early")
    return data


def _check(hasher: hashlib._Hash, digest: Digest, key: str) -> None:
    """Every byte read hashes to the digest, or the upload stops before the object appears."""
    if hasher.hexdigest() != digest.hex:
        raise StorageUnavailable(f"the local copy of {key} does not match its digest")
