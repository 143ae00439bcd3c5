"""The mirror's long-lived parts, built once from the settings: the server and the commands that
work on the cache (prefetch, export, import) use the very same services."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from mirror import __version__
from mirror.cache.upkeep import Upkeep
from mirror.config import Settings
from mirror.meta.directory import DirectoryStore
from mirror.meta.redis import RedisStore
from mirror.meta.store import MetadataStore
from mirror.metrics.hooks import UpstreamStats, unobserved
from mirror.pullthrough.blobs import BlobService
from mirror.pullthrough.manifests import ManifestService
from mirror.pullthrough.routing import Router
from mirror.pullthrough.running_fills import Fills
from mirror.pullthrough.slots import FillSlots
from mirror.replicas.source import replicas_for
from mirror.storage.blobs import BlobStore
from mirror.storage.layout import CacheLayout
from mirror.storage.manifests import ManifestStore
from mirror.storage.shared import SharedStorage, open_shared
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
    slots: FillSlots
    manifest_store: ManifestStore
    tag_store: TagStore
    blob_store: BlobStore
    upkeep: Upkeep  # recency of use and the size cap


@asynccontextmanager
async def open_services(
    settings: Settings,
    network: Network | None = None,
    upstream_stats: Callable[[str], UpstreamStats] = unobserved,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[Services]:
    """Everything long-lived: created on entry, closed on exit, in reverse order;
    `upstream_stats` gives what each upstream reports to, `clock` (unix time) dates every use
    of the cache, for eviction."""
    layout = CacheLayout(settings.cache_dir)
    await asyncio.to_thread(layout.prepare)
    async with (
        open_shared(settings.storage) as shared,
        _open(settings, layout, shared, network, upstream_stats, clock) as services,
    ):
        yield services


@asynccontextmanager
async def _open(
    settings: Settings,
    layout: CacheLayout,
    shared: SharedStorage | None,
    network: Network | None,
    upstream_stats: Callable[[str], UpstreamStats],
    clock: Callable[[], float],
) -> AsyncIterator[Services]:
    meta: MetadataStore = (
        RedisStore(settings.redis_url, settings.redis_prefix)
        if settings.redis_url
        else DirectoryStore(layout.fresh)
    )
    await meta.start()
    user_agent = f"mirror/{__version__}"
    upstreams = [
        UpstreamRegistry(
            upstream,
            meta,
            user_agent=user_agent,
            network=network or Network(),
            stats=upstream_stats(upstream.name),
        )
        for upstream in settings.upstreams
    ]
    upkeep = Upkeep(layout, meta, settings, clock, shared)
    stores, access = upkeep.stores, upkeep.access
    own_caps = {u.name: u.max_fills or settings.max_fills for u in settings.upstreams}
    slots = FillSlots(settings.max_fills, own_caps.__getitem__, settings.fill_wait)
    replicas = replicas_for(settings, meta, user_agent)
    fills = Fills(
        stores.blobs,
        layout.spool,
        slots,
        space=upkeep.evictor,
        source=replicas.source if replicas is not None else None,
    )
    await upkeep.start()
    try:
        yield Services(
            settings=settings,
            layout=layout,
            meta=meta,
            router=Router(upstreams, settings.local),
            manifests=ManifestService(
                stores.manifests,
                stores.tags,
                meta,
                access,
                layout.spool,
                replicas=replicas.manifests if replicas is not None else None,
            ),
            blobs=BlobService(stores.blobs, fills, access, layout.spool, upkeep.shared_blobs),
            fills=fills,
            slots=slots,
            manifest_store=stores.manifests,
            tag_store=stores.tags,
            blob_store=stores.blobs,
            upkeep=upkeep,
        )
    finally:
        await fills.close()
        if replicas is not None:
            await replicas.close()
        await upkeep.close()
        for upstream in upstreams:
            await upstream.close()
        await meta.close()
