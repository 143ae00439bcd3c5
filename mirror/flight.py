"""Single flight: concurrent callers asking for the same key in this process share one piece of
work (processes share theirs through claims: mirror/storage/claims.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from mirror import log

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class SingleFlight(Generic[K, T]):
    """The first caller's work runs as a task, so it completes (and is cached) even if that
    caller goes away; everyone else awaits the same task. Only work in flight is remembered."""

    def __init__(self, *, note: bool = True) -> None:
        self._inflight: dict[K, asyncio.Task[T]] = {}
        # Whether a caller that joins is a request served by another's work (its log line says
        # `cache=coalesced`), or this is bookkeeping below the request's level.
        self._note = note

    def __len__(self) -> int:
        """How much work is in flight."""
        return len(self._inflight)

    async def run(self, key: K, work: Callable[[], Awaitable[T]]) -> T:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        elif self._note:
            log.note_cache("coalesced")
        return await asyncio.shield(task)

    def _done(self, key: K, task: asyncio.Task[T]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so an error nobody awaited is not reported
