"""Keeping the cache within its limits while the mirror serves.

Every process counts what it stores into the shared usage counter, and checks it (and the disk's
free space) when it stores something and every few seconds. Past a limit, it walks the cache and
evicts down to the low-water mark (`eviction` says what goes), in a thread, while requests go on
being served. A blob about to be committed past the cap waits for that pass first (its readers
in this process already have every byte), so the cap holds within the blobs in flight. Only one
process on the cache directory walks it at a time (the upkeep lock). A write that fails for want
of space makes the next pass free a tenth of the cache, limits or not.
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
# After a pass that could not get under the limits (what is left is in flight, being read, or
# protected), walk the cache again only after a pause, doubled each time up to the most.
RETRY_FIRST = 1.0
RETRY_MOST = 60.0
# How long a commit waits for room while another process holds the upkeep lock.
ROOM_WAIT = 30.0
POLL = 0.05


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
        self._counted: int | None = None  # the shared count as last seen
        self._unsent = 0  # bytes stored here and not yet added to it
        self._cap: int | None = None  # as last resolved
        self._out_of_space = False
        self._wake = asyncio.Event()
        self._room = asyncio.Lock()  # commits waiting for room share one pass
        self._next_recount = 0.0  # at once: learn the true size at start-up
        self._hold_until = 0.0
        self._retry = RETRY_FIRST
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

    async def make_room(self, size: int) -> None:
        """Before `size` bytes are committed: evict first if they would take the cache past
        its cap. Never fails; at worst the commit goes ahead over the cap."""
        if self._fits(size) or time.monotonic() < self._hold_until:
            return  # room enough, or the last pass found nothing more to evict
        try:
            async with self._room:
                deadline = time.monotonic() + ROOM_WAIT
                while not self._fits(size) and time.monotonic() >= self._hold_until:
                    # The blob is in the spool, so the walk counts it.
                    if await self.run_pass() is not None:
                        return
                    if time.monotonic() > deadline:
                        return
                    await asyncio.sleep(POLL)  # another process is evicting: see what it left
                    unsent, self._unsent = self._unsent, 0
                    await asyncio.to_thread(self._measure, unsent)
        except Exception:
            log.get_logger().exception("eviction before a commit failed")

    def _fits(self, size: int) -> bool:
        if self._cap is None or self._counted is None:
            return True  # no cap, or not counted yet: the background check sees to it
        return self._counted + self._unsent + size <= self._cap

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
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that arrives as the event is set, and the task would never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECK_EVERY):
                    await self._wake.wait()
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
        over = await asyncio.to_thread(self._measure, unsent)
        now = time.monotonic()
        due = urgent or self._counted is None or now >= self._next_recount
        if not due and not (over and now >= self._hold_until):
            return None
        return await self.run_pass()

    def _measure(self, unsent: int) -> bool:
        self._counted = self._usage.add(unsent)
        disk = self._limits.disk()
        self._cap = self._limits.cap(disk)
        return self._counted is not None and self._limits.excess(self._counted, disk) > 0

    async def run_pass(self) -> PassResult | None:
        """Walk the cache and evict what the limits require; None if another process is at
        it."""
        urgent, self._out_of_space = self._out_of_space, False
        if self._before_pass is not None:
            await self._before_pass()
        unsent, self._unsent = self._unsent, 0
        result = await asyncio.to_thread(self._pass, urgent, unsent)
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
        if freed.bytes >= result.need:
            self._retry = RETRY_FIRST
            return result
        self._hold_until = time.monotonic() + self._retry
        if self._retry >= RETRY_MOST:
            log.get_logger().warning(
                "cannot get the cache within its limits: what is left is pinned, being "
                "downloaded or read, or used within the protection window",
                short_by=result.need - freed.bytes,
            )
        self._retry = min(self._retry * 2, RETRY_MOST)
        return result

    def _pass(self, urgent: bool, unsent: int) -> PassResult | None:
        counted = self._usage.add(unsent) if self._limits.active else None
        self._counted = counted
        if not self._lock.try_acquire():
            return None
        try:
            inventory = self._scanner.scan()
            total = inventory.total
            disk = self._limits.disk()
            self._cap = cap = self._limits.cap(disk)
            need = self._limits.excess(total, disk)
            if urgent:
                need = max(need, int(total * (1 - LOW_WATER)))
            sweeper = Sweeper(self._stores)
            if need or cap is not None:
                policy = Policy(self._protect_window, self._pins, cap)
                evict(inventory, need, policy, sweeper, self._clock())
            if self._limits.active:
                now = total - sweeper.freed.bytes
                # A correction rather than a new figure: what other processes counted during
                # the walk stays counted.
                fixed = now - counted if counted is not None else None
                self._counted = self._usage.set(now) if fixed is None else self._usage.add(fixed)
            return PassResult(total, need, sweeper.freed, sweeper.removed_manifests)
        finally:
            self._lock.release()
