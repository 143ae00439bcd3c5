"""Keeping the cache within its limits while the mirror serves.

Every process counts what it stores into the shared usage counter, and checks it (and the disk's
free space) when it stores something and every second. Past a limit, a helper process walks the
cache and evicts down to the low-water mark (`passes`, `eviction`), while requests go on being
served. A blob about to be committed past the cap waits for that pass first (its readers in this
process already have every byte), so the cap holds within the blobs in flight. Only one process
on the cache directory walks it at a time (the upkeep lock). A write that fails for want of space
makes the next pass free a tenth of the cache, limits or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from mirror import log
from mirror.cache.eviction import Freed
from mirror.cache.helper import PassHelper
from mirror.cache.passes import PassJob, PassResult
from mirror.cache.usage import Limits, Room, UsageCounter
from mirror.config import SizeLimit
from mirror.oci.digest import Digest

CHECK_EVERY = 1.0
# Even within the limits, walk the cache this often to correct the shared count (files removed
# by hand, a process killed between a commit and its count).
RECOUNT_EVERY = 600.0
# After a pass that could not get under the limits (what is left is in flight, being read, or
# protected), walk the cache again only after a pause, doubled each time up to the most.
RETRY_FIRST = 1.0
RETRY_MOST = 60.0
# The longest a commit waits for room; then it goes ahead, past the cap.
ROOM_WAIT = 30.0
POLL = 0.05
# The helper process goes away after this long without a pass, and its memory with it.
HELPER_IDLE = 120.0


class Evictor:
    """One per server process: counts what it stores, evicts in a helper process."""

    def __init__(
        self,
        root: Path,
        max_size: SizeLimit | None,
        min_free: SizeLimit | None,
        protect_window: float,
        pins: tuple[str, ...],
        *,
        clock: Callable[[], float] = time.time,
        before_pass: Callable[[], Awaitable[None]] | None = None,
        forget: Callable[[Digest], None] | None = None,
    ) -> None:
        """`before_pass` writes out pending recency; `forget` drops a removed manifest from
        this process's memory."""
        self._root = root
        self._max_size = max_size
        self._min_free = min_free
        self._limits = Limits(root, max_size, min_free)
        self._protect_window = protect_window
        self._pins = pins
        self._clock = clock
        self._before_pass = before_pass
        self._forget = forget
        self._usage = UsageCounter(root / "usage")
        self._helper = PassHelper()
        self._helper_used = 0.0
        self._retiring: asyncio.Task[None] | None = None
        self._counted: int | None = None  # the shared count as last seen
        self._unsent = 0  # bytes stored here and not yet added to it
        self._cap: int | None = None  # as last resolved
        self._out_of_space = False
        self._wake = asyncio.Event()
        self._room = asyncio.Lock()  # commits waiting for room take turns
        self._next_recount = 0.0  # at once: learn the true size at start-up
        self._hold_until = 0.0
        self._retry = RETRY_FIRST
        self._spared: frozenset[Digest] = frozenset()
        self._task: asyncio.Task[None] | None = None
        self._running: asyncio.Task[PassResult | None] | None = None
        self.passes = 0
        self.evicted = Freed()  # by this process's passes, in all
        # Told how many images each pass evicted (the metrics count them).
        self.on_evicted: Callable[[int], None] = lambda _images: None

    def measured(self) -> tuple[int, int | None] | None:
        """The cache's size as last counted (what this process stored since included) and its
        cap; None without limits, when nothing counts it."""
        if self._counted is None:
            return None
        return self._counted + self._unsent, self._cap

    def stored(self, _digest: Digest, size: int) -> None:
        """Content was stored (a commit hook: cheap, on the event loop)."""
        if not self._limits.active:
            return
        self._unsent += size
        self._wake.set()
        if self._cap is not None and size > self._cap:
            self._hold_until = 0.0  # too big to keep: evict it at once

    def spare(self, digests: Iterable[Digest]) -> None:
        """Keep this content from every later pass of this process, however old: what an
        import is bringing in must all be there when its tags are written."""
        self._spared |= frozenset(digests)

    def removed(self, size: int) -> None:
        """A blob was removed other than by eviction (cheap, on the event loop)."""
        if self._limits.active:
            self._unsent -= size

    def out_of_space(self) -> None:
        """A write failed for want of space: free some at once."""
        self._out_of_space = True
        self._hold_until = 0.0
        self._wake.set()

    def room(self) -> Room:
        """What one more blob may take (`Limits.room`), for a download to stay within: one
        `statvfs` of the cache's disk, cheap enough for the event loop."""
        usage = None if self._counted is None else self._counted + self._unsent
        return self._limits.room(self._limits.disk(), usage)

    async def reserve(self, size: int) -> None:
        """Before `size` bytes are committed: evict first if they would take the cache past
        its cap. Waits at most ROOM_WAIT and never fails: at worst the commit goes ahead over
        the cap, and the pass it started finishes in the background."""
        if self._fits(size) or self.holding:
            return  # room enough, or the last pass found nothing more to evict
        try:
            async with asyncio.timeout(ROOM_WAIT), self._room:
                while not self._fits(size) and not self.holding:
                    # The blob is in the spool, so the walk counts it.
                    if await self.run_pass() is not None:
                        return
                    await asyncio.sleep(POLL)  # another process is evicting: see what it left
                    unsent, self._unsent = self._unsent, 0
                    await asyncio.to_thread(self._measure, unsent)
        except TimeoutError:
            log.get_logger().warning("committing past the cap: eviction is slow", size=size)
        except Exception:
            log.get_logger().exception("eviction before a commit failed")

    @property
    def holding(self) -> bool:
        """Whether the last pass found too little it could remove (the rest pinned, in use or
        recent): commits go ahead past the cap until it is tried again."""
        return time.monotonic() < self._hold_until

    def within_cap(self) -> bool:
        """Whether the count says the cache is within its cap (not while nobody counted it)."""
        return self._fits(0)

    def _fits(self, size: int) -> bool:
        if self._limits.max_size is None:
            return True
        if self._cap is None or self._counted is None:
            return False  # not counted yet: a pass will tell
        return self._counted + self._unsent + size <= self._cap

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        self._wake.set()

    async def close(self) -> None:
        for task in (self._task, self._running):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._helper.stop()

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
        # A full disk a pass could not relieve is tried again as a limit passed is.
        urgent = self._out_of_space and time.monotonic() >= self._hold_until
        if not self._limits.active and not urgent:
            return None
        unsent, self._unsent = self._unsent, 0
        over = await asyncio.to_thread(self._measure, unsent)
        now = time.monotonic()
        due = urgent or self._counted is None or now >= self._next_recount
        if not due and not (over and now >= self._hold_until):
            return None
        if over or urgent:
            log.get_logger().info(
                "evicting", usage=self._counted, cap=self._cap, out_of_space=urgent
            )
        return await self.run_pass()

    def _measure(self, unsent: int) -> bool:
        self._counted = self._usage.add(unsent)
        disk = self._limits.disk()
        self._cap = self._limits.cap(disk)
        return self._counted is not None and self._limits.excess(self._counted, disk) > 0

    async def run_pass(self) -> PassResult | None:
        """Walk the cache and evict what the limits require; None if another process is at
        it. Callers while a pass runs share it; one that gives up leaves it to finish."""
        if self._running is None:
            self._running = running = asyncio.ensure_future(self._make_pass())
            running.add_done_callback(self._pass_done)
        return await asyncio.shield(self._running)

    def _pass_done(self, task: asyncio.Task[PassResult | None]) -> None:
        self._running = None
        if not task.cancelled():
            task.exception()  # retrieved: the callers that waited report it

    async def _make_pass(self) -> PassResult | None:
        urgent, self._out_of_space = self._out_of_space, False
        if self._before_pass is not None:
            await self._before_pass()
        unsent, self._unsent = self._unsent, 0
        job = PassJob(
            self._root,
            self._max_size,
            self._min_free,
            self._protect_window,
            self._pins,
            self._clock(),
            unsent,
            urgent,
            self._spared,
        )
        try:
            result = await self._in_helper(job)
        except BaseException:
            self._unsent += unsent  # still to be counted
            raise
        self._counted, self._cap = result.counted, result.cap
        # Whoever made the pass, this process or the one holding the lock, counted the cache.
        self._next_recount = time.monotonic() + RECOUNT_EVERY
        if not result.made or result.freed is None:
            return None
        self.passes += 1
        if self._forget is not None:
            for digest in result.removed_manifests:
                self._forget(digest)
        freed = result.freed
        self.evicted.images += freed.images
        self.evicted.bytes += freed.bytes
        if freed.images:
            self.on_evicted(freed.images)
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
        self._out_of_space = self._out_of_space or urgent
        if self._retry >= RETRY_MOST:
            log.get_logger().warning(
                "cannot get the cache within its limits: what is left is pinned, being "
                "downloaded or read, or used within the protection window",
                short_by=result.need - freed.bytes,
            )
        self._retry = min(self._retry * 2, RETRY_MOST)
        return result

    async def _in_helper(self, job: PassJob) -> PassResult:
        """Run the pass in the helper process (started on first use, stopped when idle)."""
        try:
            return await self._helper.run(job)
        finally:
            self._helper_used = time.monotonic()
            asyncio.get_running_loop().call_later(HELPER_IDLE, self._retire_helper)

    def _retire_helper(self) -> None:
        idle = time.monotonic() - self._helper_used >= HELPER_IDLE
        if idle and self._running is None and self._helper.running:
            self._retiring = asyncio.ensure_future(self._helper.stop())
