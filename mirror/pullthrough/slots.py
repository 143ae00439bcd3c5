"""Caps on concurrent blob downloads: in total and per upstream, with a queue that has a deadline.

Every blob miss costs a download slot for as long as its fill runs, so no client can make the
mirror download any number of blobs at once (each one is disk, memory and an upstream
connection). A fill beyond the cap waits its turn, first come first served; one that waits past
the deadline fails with `503` and `Retry-After`. While something waits, a fill nobody reads any
more may be given up to make room (`make_room`), and one nobody waits for any more gives up its
place (`unwanted`).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from mirror.errors import Busy

ROOM_CHECK_INTERVAL = 0.5


# What a wait past the deadline says; `FillSlots` of other work (uploads) say their own.
BUSY = "{used} downloads are running and {waiting} waiting; no download slot for {key} freed"


class FillSlots:
    def __init__(
        self, total: int, per_upstream: Callable[[str], int], wait: float, busy: str = BUSY
    ) -> None:
        """`busy` is formatted with `used`, `waiting` and `key` (the upstream)."""
        self._busy = busy
        self._total = total
        self._per_upstream = per_upstream
        self._wait = wait
        self._used: Counter[str] = Counter()
        self._queue: deque[tuple[str, asyncio.Future[None]]] = deque()

    @property
    def in_use(self) -> int:
        return self._used.total()

    @property
    def waiting(self) -> int:
        return sum(1 for _, future in self._queue if not future.done())

    def is_full(self) -> bool:
        """Whether the total cap, not only some upstream's, is reached."""
        return self._used.total() >= self._total

    @asynccontextmanager
    async def slot(
        self,
        upstream: str,
        make_room: Callable[[str], None] = lambda _u: None,
        unwanted: asyncio.Future[None] | None = None,
    ) -> AsyncIterator[None]:
        """Hold a slot for `upstream` for the duration of the block. Once `unwanted` is done
        (nobody waits for the work any more), a free slot is still taken, but none waited for:
        `Busy` instead."""
        await self._acquire(upstream, make_room, unwanted)
        try:
            yield
        finally:
            self._release(upstream)

    def _has_room(self, upstream: str) -> bool:
        return self._used.total() < self._total and self._used[upstream] < self._per_upstream(
            upstream
        )

    async def _acquire(
        self,
        upstream: str,
        make_room: Callable[[str], None],
        unwanted: asyncio.Future[None] | None,
    ) -> None:
        if not self.waiting and self._has_room(upstream):
            self._used[upstream] += 1
            return
        granted = asyncio.get_running_loop().create_future()
        ends = {granted} if unwanted is None else {granted, unwanted}
        self._queue.append((upstream, granted))
        try:
            async with asyncio.timeout(self._wait):
                while not any(end.done() for end in ends):
                    # A fill may become abandoned while we wait: look again now and then.
                    make_room(upstream)
                    await asyncio.wait(
                        ends, timeout=ROOM_CHECK_INTERVAL, return_when=asyncio.FIRST_COMPLETED
                    )
        except (TimeoutError, asyncio.CancelledError) as e:
            if granted.done():
                self._release(upstream)  # granted just as the wait ended
            else:
                granted.cancel()
            if isinstance(e, asyncio.CancelledError):
                raise
            busy = self._busy.format(used=self._used.total(), waiting=self.waiting, key=upstream)
            raise Busy(
                f"{busy} within {self._wait:g} s",
                retry_after=max(1, round(self._wait)),
            ) from None
        if not granted.done():
            granted.cancel()
            raise Busy(f"nobody waits for a slot for {upstream} any more")

    def _release(self, upstream: str) -> None:
        self._used[upstream] -= 1
        if self._used[upstream] <= 0:
            del self._used[upstream]
        # Wake whoever can go now, in arrival order (a waiter held back by its upstream's cap
        # does not hold back waiters for other upstreams).
        for entry in list(self._queue):
            waiter_upstream, granted = entry
            if granted.done():
                self._queue.remove(entry)
            elif self._has_room(waiter_upstream):
                self._queue.remove(entry)
                self._used[waiter_upstream] += 1
                granted.set_result(None)
