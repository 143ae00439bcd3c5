"""Keeping the cache within its limits while the mirror serves.

Every process counts what it stores into the shared usage counter and checks it (and the disk's
free space) when it stores something and every few seconds. Once past a limit, it walks the
cache and evicts down to the low-water mark (`eviction` says what goes), in a thread, while
requests go on being served. Only one process on the cache directory does so at a time (the
upkeep lock); the others leave it to that one. A write that fails for want of space makes the
next pass free a tenth of the cache, limits or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mirror import log
from mirror.cache.eviction import Freed, Policy, Sweeper, evict
from mirror.cache.inventory import Scanner, Stores
from mirror.cache.lock import UpkeepLock
from mirror.cache.usage import LOW_WATER, Limits, UsageCounter
from mirror.oci.digest import Digest

CHECK_EVERY = 5.0
# Even within the limits, walk the cache this often to correct the shared count (files removed
# by hand, a process killed between a commit and its count).
RECOUNT_EVERY = 600.0
# After a pass that could not get under the limits (everything left is protected), wait this
# long before walking the cache again, unless the disk fills.
RETRY_AFTER = 30.0


@dataclass(frozen=True, slots=True)
class PassResult:
    total: int  # bytes before the pass
    need: int
    freed: Freed
    removed_manifests: list[Digest]


class Evictor:
    def __init__(
        self,
        stores: Stores,
        limits: Limits,
        protect_window: float,
        pins: tuple[str, ...],
        *,
        clock: Callable[[], float] = time.time,
        before_pass: Callable[[], Awaitable[None]] | None = None,
        forget: Callable[[Digest], None] | None = None,
    ) -> None:
        """`before_pass` writes out pending recency; `forget` drops a removed manifest from
        this process's memory."""
        self._stores = stores
        self._limits = limits
        self._protect_window = protect_window
        self._pins = pins
        self._clock = clock
        self._before_pass = before_pass
        self._forget = forget
        self._scanner = Scanner(stores)
        self._lock = UpkeepLock(stores.layout.root)
        self._usage = UsageCounter(stores.layout.root / "usage")
        self._unsent = 0  # bytes stored here and not yet added to the shared count
        self._cap: int | None = None  # as last resolved
        self._out_of_space = False
        self._wake = asyncio.Event()
        self._next_recount = 0.0  # at once: learn the true size at start-up
        self._hold_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self.passes = 0

    def stored(self, _digest: Digest, size: int) -> None:
        """Content was stored (a commit hook: cheap, on the event loop)."""
        if not self._limits.active:
            return
        self._unsent += size
        self._wake.set()
        if self._cap is not None and size > self._cap:
            self._hold_until = 0.0  # too big to keep: evict it at once

    def out_of_space(self) -> None:
        """A write failed for want of space: free some at once."""
        self._out_of_space = True
        self._hold_until = 0.0
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), CHECK_EVERY)
            self._wake.clear()
            try:
                await self.check()
            except Exception:
                log.get_logger().exception("eviction check failed")

    async def check(self) -> PassResult | None:
        """Count what was stored, and evict if a limit is passed (or the disk filled up)."""
        urgent = self._out_of_space
        if not self._limits.active and not urgent:
            return None
        unsent, self._unsent = self._unsent, 0
        usage, over = await asyncio.to_thread(self._measure, unsent)
        now = time.monotonic()
        due = urgent or usage is None or now >= self._next_recount
        if not due and not (over and now >= self._hold_until):
            return None
        return await self.run_pass()

    def _measure(self, unsent: int) -> tuple[int | None, bool]:
        usage = self._usage.add(unsent)
        disk = self._limits.disk()
        self._cap = self._limits.cap(disk)
        return usage, usage is not None and self._limits.excess(usage, disk) > 0

    async def run_pass(self) -> PassResult | None:
        """Walk the cache and evict what the limits require; None if another process is at it."""
        urgent, self._out_of_space = self._out_of_space, False
        if self._before_pass is not None:
            await self._before_pass()
        result = await asyncio.to_thread(self._pass, urgent)
        # Whoever made the pass, this one or the one holding the lock, counted the cache.
        self._next_recount = time.monotonic() + RECOUNT_EVERY
        if result is None:
            return None
        self.passes += 1
        if self._forget is not None:
            for digest in result.removed_manifests:
                self._forget(digest)
        freed = result.freed
        if freed.bytes or result.need:
            log.get_logger().info(
                "evicted",
                before=result.total,
                needed=result.need,
                freed=freed.bytes,
                images=freed.images,
                manifests=freed.manifests,
                blobs=freed.blobs,
            )
        if freed.bytes < result.need:
            self._hold_until = time.monotonic() + RETRY_AFTER
            log.get_logger().warning(
                "cannot get the cache within its limits: what is left is pinned, in use, or "
                "used within the protection window",
                short_by=result.need - freed.bytes,
            )
        return result

    def _pass(self, urgent: bool) -> PassResult | None:
        if not self._lock.try_acquire():
            return None
        try:
            counted = self._usage.read()
            inventory = self._scanner.scan()
            total = inventory.total
            disk = self._limits.disk()
            need = self._limits.excess(total, disk)
            if urgent:
                need = max(need, int(total * (1 - LOW_WATER)))
            cap = self._limits.cap(disk)
            sweeper = Sweeper(self._stores)
            if need or cap is not None:
                policy = Policy(self._protect_window, self._pins, cap)
                evict(inventory, need, policy, sweeper, self._clock())
            if not self._limits.active:
                pass
            elif counted is None:
                self._usage.set(total - sweeper.freed.bytes)
            else:
                # A correction rather than a new figure: what other processes counted during
                # the walk stays counted.
                self._usage.add(total - counted - sweeper.freed.bytes)
            return PassResult(total, need, sweeper.freed, sweeper.removed_manifests)
        finally:
            self._lock.release()
