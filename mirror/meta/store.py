"""The metadata store interface and its embedded (in-process) backend.

The store holds what is about time and sharing: which tags are fresh (and the digest they were
fresh at), short leases so one process revalidates a tag while the others serve, and (in Redis)
hit counts per digest. Disk stays the truth for content and for the last known tag → digest
mapping, so losing the store only makes tags stale.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import Protocol

from aiocache import SimpleMemoryCache
from cachetools import LRUCache, TLRUCache

from mirror.oci.digest import Digest


class MetadataStore(Protocol):
    async def start(self) -> None: ...

    async def fresh_digest(self, key: str) -> str | None:
        """The digest a tag was revalidated at, while that is fresher than the tag TTL."""

    async def mark_fresh(self, key: str, digest: str, ttl: float) -> None: ...

    async def try_lease(self, key: str, ttl: float) -> bool:
        """Take a short exclusive lease (revalidating `key`); False if someone holds it."""

    async def release_lease(self, key: str) -> None: ...

    async def add_hits(self, hits: Mapping[str, tuple[int, float]]) -> None:
        """Add to the hit counts of cached digests: digest -> (hits, unix time of the last),
        gathered over a second. Recency for the cache directory's eviction is kept with it
        (`cache.recency`); a bucket's eviction reads these (`last_used`)."""

    async def last_used(self, digests: Collection[Digest]) -> dict[Digest, float]:
        """The last hit recorded of each digest (a `Recency`); those never recorded (or no
        longer remembered) are left out."""

    async def set_flag(self, key: str, ttl: float) -> None:
        """Raise a flag that lowers itself after `ttl` seconds (an open circuit, a spent
        rate limit), visible to every process sharing the store."""

    async def has_flag(self, key: str) -> bool: ...

    async def clear_flag(self, key: str) -> None: ...

    async def note_upstream(self, name: str, facts: dict[str, str]) -> None:
        """Record what was last seen of an upstream (rate-limit headers, health)."""

    async def close(self) -> None: ...


class Recency(Protocol):
    """The last use of content as recorded where every replica sharing a bucket records it:
    what the bucket's listing cannot tell (it knows when an object was written, not read)."""

    async def last_used(self, digests: Collection[Digest]) -> dict[Digest, float]:
        """Unix time of the last recorded use of each digest; those never recorded are left
        out."""
        ...


class EmbeddedStore:
    """The default: bounded in-process maps, so nothing else must be installed."""

    def __init__(self, max_keys: int = 100_000) -> None:
        # Each entry lives `ttl` seconds after it was set; the value is (digest, ttl).
        self._fresh: TLRUCache[str, tuple[str, float]] = TLRUCache(
            maxsize=max_keys, ttu=lambda _key, value, now: now + value[1], timer=time.monotonic
        )
        # Leases are few and short-lived: aiocache's memory cache gives SET NX PX semantics.
        self._leases = SimpleMemoryCache()
        self._flags: TLRUCache[str, float] = TLRUCache(
            maxsize=max_keys, ttu=lambda _key, ttl, now: now + ttl, timer=time.monotonic
        )
        self.upstreams: dict[str, dict[str, str]] = {}
        self._last: LRUCache[str, float] = LRUCache(max_keys)  # digest -> its last hit

    async def start(self) -> None:
        pass

    async def fresh_digest(self, key: str) -> str | None:
        entry = self._fresh.get(key)
        return entry[0] if entry else None

    async def mark_fresh(self, key: str, digest: str, ttl: float) -> None:
        if ttl > 0:
            self._fresh[key] = (digest, ttl)
        else:
            self._fresh.pop(key, None)

    async def try_lease(self, key: str, ttl: float) -> bool:
        try:
            await self._leases.add(key, 1, ttl=ttl)
        except ValueError:
            return False
        return True

    async def release_lease(self, key: str) -> None:
        await self._leases.delete(key)

    async def add_hits(self, hits: Mapping[str, tuple[int, float]]) -> None:
        """Only the last hit of each digest is kept, for this process's `last_used`: with
        nothing to share them with, counts and pulls are kept with the cache."""
        for digest, (_, last) in hits.items():
            self._last[digest] = last

    async def last_used(self, digests: Collection[Digest]) -> dict[Digest, float]:
        return {d: last for d in digests if (last := self._last.get(str(d))) is not None}

    async def set_flag(self, key: str, ttl: float) -> None:
        self._flags[key] = ttl

    async def has_flag(self, key: str) -> bool:
        return key in self._flags

    async def clear_flag(self, key: str) -> None:
        self._flags.pop(key, None)

    async def note_upstream(self, name: str, facts: dict[str, str]) -> None:
        self.upstreams.setdefault(name, {}).update(facts)

    async def close(self) -> None:
        self._fresh.clear()
        self._last.clear()
        await self._leases.clear()
        await self._leases.close()
