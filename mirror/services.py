"""The mirror's long-lived parts, built once from the settings: the server and the commands that
work on the cache (prefetch, export, import) use the very same services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from mirror import __version__
from mirror.config import Settings
from mirror.meta.directory import DirectoryStore
from mirror.meta.redis import RedisStore
from mirror.meta.store import MetadataStore
from mirror.oci.contents import BlobSizes
from mirror.pullthrough.blobs import BlobService
from mirror.pullthrough.fills import Fills
from mirror.pullthrough.manifests import ManifestService
from mirror.pullthrough.routing import Router
from mirror.pullthrough.slots import FillSlots
from mirror.storage.blobs import BlobStore
from mirror.storage.layout import CacheLayout
from mirror.storage.manifests import ManifestStore
from mirror.storage.tags import TagStore
from mirror.upstream.registry import UpstreamRegistry
from mirror.upstream.targets import Network


@dataclass(frozen=True, slots=True)
class Services:
    """The policy services (which may ask upstreams) and the stores under them (which never do)."""

    settings: Settings
    layout: CacheLayout
    meta: MetadataStore
    router: Router
    manifests: ManifestService
    blobs: BlobService
    fills: Fills
    manifest_store: ManifestStore
    tag_store: TagStore
    blob_store: BlobStore


@asynccontextmanager
async def open_services(
    settings: Settings, network: Network | None = None
) -> AsyncIterator[Services]:
    """Everything long-lived: created on entry, closed on exit, in reverse order."""
    layout = CacheLayout(settings.cache_dir)
    await asyncio.to_thread(layout.prepare)
    meta: MetadataStore = (
        RedisStore(settings.redis_url, settings.redis_prefix)
        if settings.redis_url
        else DirectoryStore(layout.fresh)
    )
    await meta.start()
    user_agent = f"mirror/{__version__}"
    upstreams = [
        UpstreamRegistry(upstream, meta, user_agent=user_agent, network=network or Network())
        for upstream in settings.upstreams
    ]
    sizes = BlobSizes()
    manifest_store, tag_store = ManifestStore(layout, sizes), TagStore(layout)
    blob_store = BlobStore(layout)
    own_caps = {u.name: u.max_fills or settings.max_fills for u in settings.upstreams}
    slots = FillSlots(settings.max_fills, own_caps.__getitem__, settings.fill_wait)
    fills = Fills(blob_store, layout.spool, slots)
    try:
        yield Services(
            settings=settings,
            layout=layout,
            meta=meta,
            router=Router(upstreams),
            manifests=ManifestService(manifest_store, tag_store, meta, layout.spool),
            blobs=BlobService(blob_store, fills, meta, layout.spool, sizes),
            fills=fills,
            manifest_store=manifest_store,
            tag_store=tag_store,
            blob_store=blob_store,
        )
    finally:
        await fills.close()
        for upstream in upstreams:
            await upstream.close()
        await meta.close()
