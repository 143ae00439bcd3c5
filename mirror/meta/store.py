"""The metadata store interface and its embedded (in-process) backend."""

from __future__ import annotations

import time
from typing import Protocol

from cachetools import TLRUCache


class MetadataStore(Protocol):
    """Freshness deadlines; losing them only makes tags stale, never loses data."""

    async def is_fresh(self, key: str) -> bool: ...

    async def mark_fresh(self, key: str, ttl: float) -> None: ...

    async def close(self) -> None: ...


class EmbeddedStore:
    """The default: a bounded in-process map of deadlines, so nothing else must be installed."""

    def __init__(self, max_keys: int = 100_000) -> None:
        # Each entry expires `ttl` seconds after it was set (its value is that ttl).
        self._fresh: TLRUCache[str, float] = TLRUCache(
            maxsize=max_keys, ttu=lambda _key, ttl, now: now + ttl, timer=time.monotonic
        )

    async def is_fresh(self, key: str) -> bool:
        return key in self._fresh

    async def mark_fresh(self, key: str, ttl: float) -> None:
        if ttl > 0:
            self._fresh[key] = ttl
        else:
            self._fresh.pop(key, None)

    async def close(self) -> None:
        self._fresh.clear()
