"""Recency of use, recorded where eviction and `mirror ls` read it: in the cache directory.

Each use of a cached blob or manifest sets the file's access time (see `storage.files`), and each
pull of a tag adds to the tag's pull count, so recency survives restarts and every worker and
replica on the cache directory sees the same. A request only counts the use, and when, in a
small map (a fraction of a microsecond); once a second a task writes the uses out, off the event
loop, touching a file at most once per `touch_every` seconds per process (a hot manifest costs
one `utime` a minute, not one per request; eviction's protection window is far longer), and
hands the hit counts to the metadata store (Redis keeps them per digest).

Only content that exists is recorded: callers call this once they hold a cached answer, so a
request for a digest that is nowhere records nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Hashable
from typing import Any

from mirror import log
from mirror.meta.store import MetadataStore
from mirror.oci.digest import Digest
from mirror.storage.blobs import BlobStore
from mirror.storage.manifests import ManifestStore
from mirror.storage.tags import TagStore

TOUCH_EVERY = 60.0
FLUSH_EVERY = 1.0
# The most distinct items counted between two writes; uses of others wait for the next round.
MAX_PENDING = 50_000


class _Use:
    """Uses of one item since the last write: how many were hits, and when the last was."""

    __slots__ = ("count", "digest", "last")

    def __init__(self, digest: Digest | None, at: float) -> None:
        self.digest = digest  # None for a tag's pulls
        self.count = 0
        self.last = at


class AccessLog:
    def __init__(
        self,
        blobs: BlobStore,
        manifests: ManifestStore,
        tags: TagStore,
        meta: MetadataStore,
        clock: Callable[[], float] = time.time,
        touch_every: float = TOUCH_EVERY,
    ) -> None:
        self._blobs = blobs
        self._manifests = manifests
        self._tags = tags
        self._meta = meta
        self._clock = clock
        self._touch_every = touch_every
        # Uses since the last write, by digest hex: served (counted as hits) or stored (not).
        self._blob_uses: dict[str, _Use] = {}
        self._manifest_uses: dict[str, _Use] = {}
        self._pulls: dict[tuple[str, str, str], _Use] = {}
        # When this process last touched each file (by kind and hex); bounded by MAX_PENDING.
        self._touched: dict[tuple[bool, str], float] = {}
        self._task: asyncio.Task[None] | None = None

    def blob(self, digest: Digest) -> None:
        """A cached blob is being served."""
        self._use(self._blob_uses, digest.hex, digest, 1)

    def manifest(self, digest: Digest) -> None:
        """A cached manifest is being served."""
        self._use(self._manifest_uses, digest.hex, digest, 1)

    def pulled(self, registry: str, repo: str, tag: str) -> None:
        """A cached tag was resolved (a GET or HEAD of its manifest was answered)."""
        self._use(self._pulls, (registry, repo, tag), None, 1)

    def stored_blob(self, digest: Digest) -> None:
        """A blob was committed: new content is as recent as content just used."""
        self._use(self._blob_uses, digest.hex, digest, 0)

    def stored_manifest(self, digest: Digest) -> None:
        self._use(self._manifest_uses, digest.hex, digest, 0)

    def _use(self, uses: dict[Any, _Use], key: Hashable, digest: Digest | None, hits: int) -> None:
        use = uses.get(key)
        if use is None:
            if len(uses) >= MAX_PENDING:
                return
            use = uses[key] = _Use(digest, self._clock())
        else:
            use.last = self._clock()
        use.count += hits

    async def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            try:
                await self.flush()
            except OSError as e:  # a full or failing disk: the next round tries again
                log.get_logger().warning("cannot record recency", error=str(e))

    async def flush(self) -> None:
        """Write out what was used since the last flush."""
        blobs, self._blob_uses = self._blob_uses, {}
        manifests, self._manifest_uses = self._manifest_uses, {}
        pulls, self._pulls = self._pulls, {}
        await self._meta.add_hits(
            {
                str(u.digest): (u.count, u.last)
                for u in (*blobs.values(), *manifests.values())
                if u.count
            }
        )
        touches = self._due(True, blobs) + self._due(False, manifests)
        if touches or pulls:
            await asyncio.to_thread(self._write, touches, pulls)

    def _due(self, is_blob: bool, uses: dict[str, _Use]) -> list[tuple[bool, Digest, float]]:
        """The files to touch: those this process has not touched for `touch_every`."""
        if len(self._touched) > MAX_PENDING:
            self._touched.clear()  # forgetting only means one more touch each
        due = []
        for key, use in uses.items():
            touched = self._touched.get((is_blob, key))
            if use.digest is not None and (
                touched is None or use.last >= touched + self._touch_every
            ):
                self._touched[(is_blob, key)] = use.last
                due.append((is_blob, use.digest, use.last))
        return due

    def _write(
        self, touches: list[tuple[bool, Digest, float]], pulls: dict[tuple[str, str, str], _Use]
    ) -> None:
        for is_blob, digest, at in touches:
            (self._blobs if is_blob else self._manifests).touch(digest, at)
        for (registry, repo, tag), use in pulls.items():
            self._tags.add_pulls(registry, repo, tag, use.count, use.last)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(OSError):
            await self.flush()
