"""One S3 bucket and key prefix, through one aiobotocore client: the few calls the stores make,
with every failure of the store turned into `StorageUnavailable` (a 503 for the client) and a
missing key into None.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from mirror.config import S3Settings
from mirror.errors import StorageUnavailable

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

# Short enough that a store that is down, or hangs, fails requests quickly (each request is
# tried at most ATTEMPTS times, so a client waits about ATTEMPTS * READ_TIMEOUT for its 503);
# reads of big objects stream, so the read timeout bounds a stall, not a transfer.
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 10.0
ATTEMPTS = 2
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}


@dataclass(frozen=True, slots=True)
class Listed:
    """An object as a listing names it: its key, bytes and last write (unix time)."""

    key: str
    size: int
    modified: float


class Bucket:
    """Keys under the prefix (`key("blobs/sha256/…")`) and the calls the stores need."""

    def __init__(self, client: S3Client, settings: S3Settings) -> None:
        self.client = client
        self.name = settings.bucket
        self._prefix = f"{settings.prefix}/" if settings.prefix else ""

    def key(self, path: str) -> str:
        return self._prefix + path

    def relative(self, key: str) -> str:
        """The path of a listed key below the prefix."""
        return key[len(self._prefix) :]

    async def head(self, key: str) -> Mapping[str, Any] | None:
        """The object's headers (ContentLength, ContentType), or None when there is none."""
        with translated(key):
            try:
                return await self.client.head_object(Bucket=self.name, Key=key)
            except ClientError as e:
                if _is_missing(e):
                    return None
                raise

    async def get_bytes(self, key: str) -> tuple[bytes, str] | None:
        """A small object whole, with its content type, or None when there is none."""
        with translated(key):
            try:
                response = await self.client.get_object(Bucket=self.name, Key=key)
            except ClientError as e:
                if _is_missing(e):
                    return None
                raise
            async with response["Body"] as body:
                data = await body.read()
            return data, response.get("ContentType", "application/octet-stream")

    async def stream(self, key: str, start: int, end: int) -> AsyncGenerator[bytes, None]:
        """Bytes [start, end) of an object as they arrive (a ranged GET, RFC 9110 §14.1.2)."""
        with translated(key):
            response = await self.client.get_object(
                Bucket=self.name, Key=key, Range=f"bytes={start}-{end - 1}"
            )
            async with response["Body"] as body:
                # A store (or a proxy before it) may ignore the Range and send the whole
                # object (RFC 9110 §14.2 lets it): those bytes are not the range's.
                sent = response.get("ContentLength")
                if sent != end - start:
                    raise StorageUnavailable(
                        f"the object store answered {sent} bytes for {end - start} of {key}"
                    )
                async for chunk in body.iter_chunks(1 << 20):
                    yield chunk

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write a small object whole (S3 never shows a partly written object)."""
        with translated(key):
            await self.client.put_object(
                Bucket=self.name, Key=key, Body=data, ContentType=content_type
            )

    async def delete(self, key: str) -> None:
        with translated(key):
            await self.client.delete_object(Bucket=self.name, Key=key)

    async def remove(self, key: str) -> bool:
        """Delete the object if there is one; True when it was there."""
        if await self.head(key) is None:
            return False
        await self.delete(key)
        return True

    async def list(self, path: str) -> AsyncIterator[tuple[str, int]]:
        """(key, size) of every object under `path`."""
        async for listed in self.objects(path):
            yield listed.key, listed.size

    async def objects(self, path: str) -> AsyncIterator[Listed]:
        """Every object under `path`, as the listing describes it (ListObjectsV2)."""
        paginator = self.client.get_paginator("list_objects_v2")
        with translated(path):
            async for page in paginator.paginate(Bucket=self.name, Prefix=self.key(path)):
                for item in page.get("Contents", []):
                    yield Listed(item["Key"], item["Size"], item["LastModified"].timestamp())

    async def multipart_uploads(self) -> AsyncIterator[tuple[str, str, float]]:
        """(key, upload id, when it started) of every multipart upload under the prefix that
        was neither completed nor aborted."""
        paginator = self.client.get_paginator("list_multipart_uploads")
        with translated(self.key("")):
            async for page in paginator.paginate(Bucket=self.name, Prefix=self.key("")):
                for upload in page.get("Uploads", []):
                    yield upload["Key"], upload["UploadId"], upload["Initiated"].timestamp()

    async def abort(self, key: str, upload: str) -> None:
        """Abort a multipart upload, dropping its parts (one already ended is left alone)."""
        with translated(key):
            try:
                await self.client.abort_multipart_upload(Bucket=self.name, Key=key, UploadId=upload)
            except ClientError as e:
                if not _is_missing(e):
                    raise


def _is_missing(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code")) in _MISSING


@contextlib.contextmanager
def translated(key: str) -> Iterator[None]:
    """Any failure to talk to the store becomes a 503 naming what could not be reached."""
    try:
        yield
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "error")
        raise StorageUnavailable(f"the object store answered {code} for {key}") from e
    except (BotoCoreError, aiohttp.ClientError, TimeoutError, OSError) as e:
        raise StorageUnavailable(f"the object store is unreachable: {type(e).__name__}") from e


@functools.cache
def _session() -> AioSession:
    """The one botocore session of the process: each new one loads and parses the S3 service
    model again (about 0.1 s of CPU and 10 MB). Each client made from it still has its own
    endpoint, region, credentials and connections."""
    return get_session()


@contextlib.asynccontextmanager
async def open_bucket(settings: S3Settings) -> AsyncIterator[Bucket]:
    """A client for the bucket, closed on exit; credentials left unset come from the AWS SDK's
    own chain (profiles, instance roles)."""
    config = AioConfig(
        signature_version="s3v4",
        # Buckets on a custom endpoint (MinIO, SeaweedFS, Ceph) are addressed by path; on AWS
        # by host name, as AWS prefers.
        s3={"addressing_style": "path" if settings.endpoint else "auto"},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"total_max_attempts": ATTEMPTS, "mode": "standard"},
        max_pool_connections=64,
    )
    async with contextlib.AsyncExitStack() as stack:
        # The SDK reads its own settings here: an AWS_PROFILE naming no profile fails.
        with translated(settings.url):
            client = await stack.enter_async_context(
                _session().create_client(
                    "s3",
                    endpoint_url=settings.endpoint,
                    region_name=settings.region or "us-east-1",
                    aws_access_key_id=settings.access_key_id,
                    aws_secret_access_key=settings.secret_access_key,
                    config=config,
                )
            )
        yield Bucket(client, settings)
