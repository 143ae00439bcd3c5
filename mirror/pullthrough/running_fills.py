"""The fills one process runs: found by digest while they stream, each started through the
route that asked, the abandoned ones given up when others wait for a download slot, and all
stopped at shutdown (but those committing what their clients already have)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from mirror import log
from mirror.oci.digest import Digest
from mirror.pullthrough.fills import COMMIT_GRACE, BlobFill, Space
from mirror.pullthrough.slots import FillSlots
from mirror.pullthrough.sources import BlobSource
from mirror.storage.blobs import BlobStore
from mirror.upstream.registry import UpstreamRegistry


class Fills:
    """The fills this process runs: those streaming, keyed by digest; all cancelled at shutdown."""

    def __init__(
        self,
        store: BlobStore,
        spool: Path,
        slots: FillSlots,
        space: Space | None = None,
        source: Callable[[UpstreamRegistry, Digest], BlobSource] | None = None,
    ) -> None:
        self._store = store
        self._source = source  # what a fill reads from instead of the upstream itself
        self._space = space
        self._spool = spool
        self._slots = slots
        self._streaming: dict[Digest, BlobFill] = {}  # the one new readers join, per digest
        self._tasks: dict[asyncio.Task[None], tuple[str, BlobFill]] = {}  # every fill running

    def running(self, digest: Digest) -> BlobFill | None:
        fill = self._streaming.get(digest)
        return fill if fill is not None and fill.streaming else None

    def start(
        self,
        upstream: UpstreamRegistry,
        repo: str,
        digest: Digest,
        unwanted: asyncio.Future[None] | None = None,
    ) -> BlobFill:
        """Start fetching `digest` through this route; `started()` tells whether it got it.
        Once `unwanted` is done, it waits for no download slot (see `BlobFill.run`)."""
        fill = BlobFill(
            digest,
            self._store.new_spool_file(digest),
            self._store.path(digest),
            self._spool,
            self._announced,
        )
        source = upstream if self._source is None else self._source(upstream, digest)
        task = asyncio.create_task(
            fill.run(source, repo, self._store, self._slots, self._make_room, self._space, unwanted)
        )
        self._tasks[task] = (upstream.name, fill)
        task.add_done_callback(lambda t: self._done(t, fill))
        return fill

    @property
    def in_flight(self) -> int:
        """Downloads running now (streaming, waiting for a slot, or committing)."""
        return len(self._tasks)

    def _announced(self, fill: BlobFill) -> None:
        self._streaming[fill.digest] = fill

    def _done(self, task: asyncio.Task[None], fill: BlobFill) -> None:
        del self._tasks[task]
        if self._streaming.get(fill.digest) is fill:
            del self._streaming[fill.digest]

    def _make_room(self, upstream: str) -> None:
        """Give up one abandoned fill: of this upstream if there is one (its own cap may be
        what holds the waiter up), else any, when the total is what does."""
        abandoned = [
            (name, task) for task, (name, fill) in self._tasks.items() if fill.is_abandoned()
        ]
        same = [task for name, task in abandoned if name == upstream]
        victims = same or ([task for _, task in abandoned] if self._slots.is_full() else [])
        if victims:
            fill = self._tasks[victims[0]][1]
            log.get_logger().info("giving up an abandoned download", digest=str(fill.digest))
            victims[0].cancel()

    async def close(self) -> None:
        """Stop downloading at shutdown, but let verified blobs finish their commit (an fsync
        and a rename): their clients already have every byte, so the cache should too."""
        committing = [task for task, (_, fill) in self._tasks.items() if fill.finished]
        if committing:
            await asyncio.wait(committing, timeout=COMMIT_GRACE)
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
