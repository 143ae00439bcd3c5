"""The local namespaces as the server uses them, with the task that expires abandoned uploads."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from mirror import log
from mirror.config import Settings
from mirror.local.blobs import LocalBlobs
from mirror.local.catalog import Catalog
from mirror.local.manifests import LocalManifests
from mirror.local.store import LocalStore
from mirror.local.uploads import UploadSessions
from mirror.pullthrough.slots import FillSlots
from mirror.storage.blobs import BlobStore
from mirror.storage.layout import CacheLayout
from mirror.storage.manifests import ManifestStore
from mirror.storage.tags import TagStore

# Expired uploads are looked for this often at most (and at start-up).
EXPIRY_CHECK = 60.0


def uploads_dir(root: Path) -> Path:
    return root / "uploads"


class LocalRegistry:
    def __init__(
        self,
        settings: Settings,
        layout: CacheLayout,
        blobs: BlobStore,
        manifests: ManifestStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = LocalStore(layout)
        self.uploads = UploadSessions(uploads_dir(layout.root), clock=clock)
        slots = FillSlots(
            settings.max_uploads,
            lambda _key: settings.max_uploads,
            settings.fill_wait,
            busy="{used} uploads are running and {waiting} waiting; no upload slot freed",
        )
        self.blobs = LocalBlobs(self.store, self.uploads, blobs, slots)
        # A repository's links and revisions are in the cache directory alone, and so are its
        # tags: a copy in a bucket behind the directory would outlive the tag's deletion.
        self.manifests = LocalManifests(self.store, manifests, TagStore(layout), blobs)
        names = [n.name for n in settings.local]
        self.catalog = Catalog(layout, self.store, settings.upstreams, names, clock=clock)
        self._enabled = bool(names)
        self._expiry = settings.upload_expiry
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._enabled:
            await asyncio.to_thread(self.uploads.prepare)
            self._task = asyncio.create_task(self._expire_forever())

    async def expire_uploads(self) -> int:
        """Remove uploads with no request for `upload_expiry` seconds."""
        return await asyncio.to_thread(self.uploads.expire, self._clock() - self._expiry)

    async def _expire_forever(self) -> None:
        while True:
            try:
                if removed := await self.expire_uploads():
                    log.get_logger().info("expired uploads removed", count=removed)
            except OSError as e:
                log.warn_once("cannot expire uploads", error=e.strerror)
            await asyncio.sleep(min(EXPIRY_CHECK, self._expiry / 4))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
