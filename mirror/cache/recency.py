"""Recency of use, recorded where eviction and `mirror ls` read it: in the cache directory.

Each use of a cached blob or manifest sets the file's access time (see `storage.files`), and each
pull of a tag adds to the tag's pull count, so recency survives restarts and every worker and
replica on the cache directory sees the same. The request only notes the use, and when, in two
small maps; a task writes them out once a second, off the event loop. A file is touched at most
once per `touch_every` seconds per process, so a hot manifest costs one `utime` a minute, not
one per request; eviction's protection window is far longer than that.

Only content that exists is recorded: callers call this once they hold a cached answer, so a
request for a digest that is nowhere records nothing. The Redis store, where there is one, also
counts hits per digest (`MetadataStore.record_access`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from cachetools import TTLCache

from mirror import log
from mirror.meta.store import MetadataStore
from mirror.oci.digest import Digest
from mirror.storage.blobs import BlobStore
from mirror.storage.manifests import ManifestStore
from mirror.storage.tags import TagStore

TOUCH_EVERY = 60.0
FLUSH_EVERY = 1.0
# The most distinct items remembered between two writes; beyond, uses go unrecorded until then.
MAX_PENDING = 50_000

_Key = tuple[bool, Digest]  # (is a blob, digest)


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
        # Touched lately by this process: not again until the entry expires.
        self._recent: TTLCache[_Key, None] = TTLCache(MAX_PENDING, touch_every, time.monotonic)
        self._touches: dict[_Key, float] = {}  # item -> when it was used
        self._pulls: dict[tuple[str, str, str], tuple[int, float]] = {}  # -> (count, last)
        self._task: asyncio.Task[None] | None = None

    def blob(self, digest: Digest) -> None:
        """A cached blob is being served."""
        self._meta.record_access(str(digest))
        self._touch((True, digest))

    def manifest(self, digest: Digest) -> None:
        """A cached manifest is being served."""
        self._meta.record_access(str(digest))
        self._touch((False, digest))

    def pulled(self, registry: str, repo: str, tag: str) -> None:
        """A cached tag was resolved (a GET or HEAD of its manifest was answered)."""
        key = (registry, repo, tag)
        pending = self._pulls.get(key)
        if pending is not None:
            self._pulls[key] = (pending[0] + 1, self._clock())
        elif len(self._pulls) < MAX_PENDING:
            self._pulls[key] = (1, self._clock())

    def stored_blob(self, digest: Digest, _size: int) -> None:
        """A blob was committed: new content is as recent as content just used."""
        self._touch((True, digest))

    def stored_manifest(self, digest: Digest, _size: int) -> None:
        self._touch((False, digest))

    def _touch(self, key: _Key) -> None:
        if key in self._recent or len(self._touches) >= MAX_PENDING:
            return
        self._recent[key] = None
        self._touches[key] = self._clock()

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
        if not self._touches and not self._pulls:
            return
        touches, self._touches = self._touches, {}
        pulls, self._pulls = self._pulls, {}
        await asyncio.to_thread(self._write, touches, pulls)

    def _write(
        self, touches: dict[_Key, float], pulls: dict[tuple[str, str, str], tuple[int, float]]
    ) -> None:
        for (is_blob, digest), at in touches.items():
            (self._blobs if is_blob else self._manifests).touch(digest, at)
        for (registry, repo, tag), (count, last) in pulls.items():
            self._tags.add_pulls(registry, repo, tag, count, last)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(OSError):
            await self.flush()
