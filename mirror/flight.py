"""Single flight: concurrent callers asking for the same key in this process share one piece of
work (processes share theirs through claims: mirror/storage/claims.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from mirror import log

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass(slots=True)
class _Flight(Generic[T]):
    """One piece of work in flight, and how many callers await it."""

    task: asyncio.Task[T]
    unwanted: Callable[[], None] | None
    waiters: int = 0
    left: bool = False  # every caller left before it was done, and it was told so


class SingleFlight(Generic[K, T]):
    """The first caller's work runs as a task, so it completes (and is cached) even if that
    caller goes away; everyone else awaits the same task. Only work in flight is remembered."""

    def __init__(self, *, note: bool = True) -> None:
        self._inflight: dict[K, _Flight[T]] = {}
        # Whether a caller that joins is a request served by another's work (its log line says
        # `cache=coalesced`), or this is bookkeeping below the request's level.
        self._note = note

    def __len__(self) -> int:
        """How much work is in flight."""
        return len(self._inflight)

    async def run(
        self,
        key: K,
        work: Callable[[], Awaitable[T]],
        unwanted: Callable[[], None] | None = None,
    ) -> T:
        """The key's work, joined or started. If the work is started here with `unwanted`, that
        is called once every caller has left before the work is done: work that holds a place
        while it waits may then give up. Callers that come after that do not join it (it may
        end in nothing): they wait for it to end, then start their own."""
        while (flight := self._inflight.get(key)) is not None and flight.left:
            # Its done callback forgets it before this wait ends.
            await asyncio.wait([flight.task])
        if flight is None:
            flight = _Flight(asyncio.ensure_future(work()), unwanted)
            self._inflight[key] = flight
            flight.task.add_done_callback(lambda t: self._done(key, t))
        elif self._note:
            log.note_cache("coalesced")
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            # Only a caller cancelled while the work is unfinished leaves it here.
            if flight.unwanted is not None and not flight.waiters and not flight.task.done():
                flight.left = True
                flight.unwanted()

    def _done(self, key: K, task: asyncio.Task[T]) -> None:
        flight = self._inflight.get(key)
        if flight is not None and flight.task is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so an error nobody awaited is not reported
