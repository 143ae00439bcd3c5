"""Keeping the bucket within its cap (`[storage] max_size`), as one cache across replicas.

Every process of every replica looks once a `every` seconds, but only the one that takes the
metadata store's `bucket-cap` lease goes on; the lease is left to expire, so the bucket is looked
at once per interval however many replicas share it (through Redis; with the embedded store,
once per process), and ten times less often while it is under half its cap. A listing (sizes
alone, a request per thousand objects) says whether the bucket's blobs and manifests are past
the cap; only then is it scanned (`scan_bucket`) and the least recently used images removed
down to the low-water mark, by the cache directory's rules (`cache.eviction`): an object's last
use is the later of its last write and the last hit any replica recorded
(`MetadataStore.last_used`), and the protection window and pins apply as on disk.

Each replica's local copies stay, bounded by its own `--max-size`; a blob a replica still
serves is uploaded again within the hour (`storage.shared_blobs`), as content in use should be.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from cachetools import LRUCache

from mirror import log
from mirror.cache.eviction import Freed, Planned, Policy, evict
from mirror.cache.inventory import REMEMBERED, Inventory, KnownLinks
from mirror.cache.usage import LOW_WATER
from mirror.errors import StorageUnavailable
from mirror.meta.store import MetadataStore
from mirror.storage.s3.bucket import Bucket
from mirror.storage.s3.inventory import scan_bucket
from mirror.storage.s3.removal import remove
from mirror.storage.s3.usage import bucket_usage

CHECK_EVERY = 60.0
# A bucket under this share of its cap is listed ten times less often: each listing is a
# request per thousand objects, which a store bills.
CALM_BELOW = 0.5
CALM_FOR = 10
_LEASE = "bucket-cap"
_CALM = "bucket-cap-calm"


class BucketCap:
    """One per server process: looks at the bucket's size now and then, and evicts past it."""

    def __init__(
        self,
        bucket: Bucket,
        meta: MetadataStore,
        cap: int,
        protect_window: float,
        pins: tuple[str, ...],
        *,
        every: float = CHECK_EVERY,
        clock: Callable[[], float] = time.time,
        before_pass: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`before_pass` writes out this process's pending uses, so they count."""
        self._bucket = bucket
        self._meta = meta
        self._policy = Policy(protect_window, pins, cap)
        self._cap = cap
        self._every = every
        self._clock = clock
        self._before_pass = before_pass
        self._known: KnownLinks = LRUCache(REMEMBERED)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._forever())

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            try:
                await self.check()
            except StorageUnavailable as e:
                log.warn_once("cannot keep the bucket within its cap", error=e.message)

    async def check(self) -> Freed | None:
        """Look once: what was removed (nothing while within the cap), or None when another
        process looked within the interval."""
        if await self._meta.has_flag(_CALM) or not await self._meta.try_lease(_LEASE, self._every):
            return None
        usage = await bucket_usage(self._bucket)
        stored = usage.blobs.bytes + usage.manifests.bytes
        if stored <= self._cap:
            if stored < self._cap * CALM_BELOW:
                await self._meta.set_flag(_CALM, self._every * CALM_FOR)
            return Freed()
        if self._before_pass is not None:
            await self._before_pass()
        inventory = await scan_bucket(self._bucket, self._meta, self._known)
        plan = Planned()
        evict_past_cap(inventory, self._policy, plan, self._clock())
        await remove(self._bucket, plan.removal)
        log.get_logger().info(
            "evicted from the bucket",
            images=plan.freed.images,
            tags=plan.freed.tags,
            manifests=plan.freed.manifests,
            blobs=plan.freed.blobs,
            bytes=plan.freed.bytes,
            cap=self._cap,
        )
        return plan.freed

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def evict_past_cap(inventory: Inventory, policy: Policy, plan: Planned, now: float) -> None:
    """Plan the removals that take a bucket past its cap (`policy.cap`) down to the low-water
    mark, as the directory's limits do; nothing within it."""
    if policy.cap is not None and inventory.cached_total > policy.cap:
        evict(inventory, inventory.cached_total - int(policy.cap * LOW_WATER), policy, plan, now)
