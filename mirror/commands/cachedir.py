"""What the upkeep commands share: the cache directory or the bucket they work on (and the cache
directory in front of a bucket), and sizes and times written for people."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from mirror.cache.inventory import Inventory, Stores
from mirror.cache.lock import UpkeepLock
from mirror.commands import CommandError
from mirror.config import S3Settings, Settings
from mirror.errors import StorageUnavailable
from mirror.meta.redis import RedisStore
from mirror.storage.quarantine import QuarantinedFile
from mirror.storage.s3.bucket import Bucket, open_bucket
from mirror.storage.s3.inventory import scan_bucket

# How long `gc` and `rm` wait for a server's evictor to finish its pass.
LOCK_WAIT = 120.0
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
T = TypeVar("T")


def open_cache(settings: Settings) -> Stores:
    """The stores of the configured cache directory, when it is the whole cache."""
    return open_directory(settings.cache_dir)


def open_directory(root: Path) -> Stores:
    """The stores of a cache directory, which must exist (nothing is created)."""
    if not (root / "blobs").is_dir():
        raise CommandError(f"no cache at {root} (--cache-dir, MIRROR_CACHE_DIR)")
    return Stores.at(root)


def open_front(settings: Settings) -> Stores | None:
    """With a bucket behind it, the cache directory in front of it on this host, if there is
    one (a replica that never served has none)."""
    root = settings.cache_dir
    return Stores.at(root) if (root / "blobs").is_dir() else None


def in_front(stores: Stores) -> str:
    """The heading over what a command reports of the cache directory in front of a bucket."""
    return f"cache directory {stores.layout.root}, in front of the bucket:"


@contextlib.contextmanager
def pruning(stores: Stores) -> Iterator[None]:
    """Hold the cache directory's upkeep lock (a server's evictor takes it too)."""
    with UpkeepLock(stores.layout.root) as lock:
        if not lock.acquire(LOCK_WAIT):
            raise CommandError("another process is pruning the cache; try again later")
        yield


async def scan(bucket: Bucket, settings: Settings) -> Inventory:
    """The bucket's inventory; last uses as the metadata store every replica shares (Redis)
    records them, when it keeps them."""
    if settings.redis_url is None:
        return await scan_bucket(bucket)
    store = RedisStore(settings.redis_url, settings.redis_prefix)
    await store.start()
    try:
        return await scan_bucket(bucket, store)
    finally:
        await store.close()


def on_bucket(storage: S3Settings, work: Callable[[Bucket], Awaitable[T]]) -> T:
    """Run `work` on the bucket; a store that is down or refuses stops the command with one
    line naming what failed."""

    async def run() -> T:
        async with open_bucket(storage) as bucket:
            return await work(bucket)

    try:
        return asyncio.run(run())
    except StorageUnavailable as e:
        raise CommandError(e.message) from None


def human_size(size: int) -> str:
    value = float(size)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def count(n: int, noun: str) -> str:
    """`1 blob`, `2 blobs`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def files_size(files: Sequence[QuarantinedFile]) -> str:
    """`2 files (1.2 KiB)`."""
    return f"{count(len(files), 'file')} ({human_size(sum(f.size for f in files))})"


def utc_time(at: float | None) -> str | None:
    """ISO 8601 in UTC, to the second (None stays None)."""
    return None if at is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, for a terminal."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)
