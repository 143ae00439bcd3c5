"""Once across processes: workers and replicas on one cache directory that miss the same
manifest at the same moment make one upstream request between them.

The first takes a lock file in the spool; the others wait for its result to appear on disk, and
only do the work themselves if the holder lets go without producing it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from mirror.storage.fill_lock import FillLock, is_filling, lock_path

T = TypeVar("T")
POLL = 0.02
WAIT = 30.0


async def once_across_processes(
    spool: Path,
    key: str,
    work: Callable[[], Awaitable[T]],
    produced: Callable[[], Awaitable[T | None]],
) -> T:
    """Run `work` unless another process is already running it for `key`; then return what
    it produced (`produced()` reads it back), or run `work` after all if it produced nothing."""
    name = hashlib.sha256(key.encode()).hexdigest()
    lock = FillLock.try_acquire(spool, name)
    if lock is None:
        path = lock_path(spool, name)
        deadline = asyncio.get_running_loop().time() + WAIT
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(POLL)
            if (result := await produced()) is not None:
                return result
            if not is_filling(path):
                break
        return await work()
    try:
        return await work()
    finally:
        lock.release()
