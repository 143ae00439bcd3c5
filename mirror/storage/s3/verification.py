"""Re-hashing the bucket (`mirror verify` on `--storage s3://…`): every blob and manifest is read
back and hashed; one whose bytes no longer match its digest is removed, so that the next pull
fetches a good copy, unless it was written again since it was listed (a fresh copy)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from mirror.oci.digest import Digest
from mirror.storage.s3.bucket import Bucket, Listed
from mirror.storage.s3.inventory import list_content

# Objects hashed at once: hashing runs off the loop, the reads overlap.
WORKERS = 4


@dataclass(frozen=True, slots=True)
class CheckedObject:
    """What re-hashing one object found, and whether it was removed."""

    kind: str  # "blob" or "manifest"
    digest: Digest
    size: int
    good: bool
    removed: bool = False


async def verify_bucket(bucket: Bucket) -> AsyncIterator[CheckedObject]:
    """Check every manifest, then every blob, `WORKERS` at a time, yielding each in turn, and
    take the damaged ones out of the bucket."""
    listing = await list_content(bucket)
    jobs = [("manifest", d, o) for d, o in listing.manifests.items()]
    jobs += [("blob", d, o) for d, o in listing.blobs.items()]

    async def check(kind: str, digest: Digest, listed: Listed) -> CheckedObject:
        good = await _matches(bucket, digest, listed)
        removed = not good and await _remove_unchanged(bucket, listed)
        return CheckedObject(kind, digest, listed.size, good, removed)

    running: deque[asyncio.Task[CheckedObject]] = deque()
    try:
        for job in jobs:
            running.append(asyncio.ensure_future(check(*job)))
            if len(running) >= WORKERS:
                yield await running.popleft()
        while running:
            yield await running.popleft()
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def _matches(bucket: Bucket, digest: Digest, listed: Listed) -> bool:
    """Whether the object hashes to its digest (one removed meanwhile: nothing to judge)."""
    hasher = digest.hasher()
    if listed.size:  # an empty object asks the store for nothing (no empty byte range)
        if await bucket.head(listed.key) is None:
            return True
        async with contextlib.aclosing(bucket.stream(listed.key, 0, listed.size)) as chunks:
            async for chunk in chunks:
                await asyncio.to_thread(hasher.update, chunk)
    return hasher.hexdigest() == digest.hex


async def _remove_unchanged(bucket: Bucket, listed: Listed) -> bool:
    """Remove the object unless it was written again since it was listed."""
    found = await bucket.head(listed.key)
    if found is None or found["LastModified"].timestamp() > listed.modified:
        return False
    await bucket.delete(listed.key)
    return True
