"""`create_app(settings)`: builds the whole mirror; every resource lives in one cleanup context."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from mirror import __version__
from mirror.api.auth import setup_client_auth
from mirror.api.hot import HotAnswers
from mirror.api.keys import (
    BLOBS,
    HOT_ANSWERS,
    LISTINGS,
    MANIFESTS,
    META,
    READINESS,
    ROUTER,
    SETTINGS,
)
from mirror.api.middlewares import request_middleware
from mirror.api.readiness import Readiness
from mirror.api.routes import setup_routes
from mirror.config import Settings
from mirror.meta.redis import RedisStore
from mirror.meta.store import EmbeddedStore, MetadataStore
from mirror.oci.manifest import BlobSizes
from mirror.pullthrough.blobs import BlobService
from mirror.pullthrough.fills import Fills
from mirror.pullthrough.listings import ListingService
from mirror.pullthrough.manifests import ManifestService
from mirror.pullthrough.routing import Router
from mirror.pullthrough.slots import FillSlots
from mirror.storage.blobs import BlobStore
from mirror.storage.layout import CacheLayout
from mirror.storage.manifests import ManifestStore
from mirror.storage.tags import TagStore
from mirror.upstream.registry import UpstreamRegistry, make_session


def create_app(settings: Settings) -> web.Application:
    # A pull-only registry reads no request bodies: refuse big ones before the handler runs.
    app = web.Application(middlewares=[request_middleware()], client_max_size=64 << 10)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_services)
    setup_routes(app)
    setup_client_auth(app, settings)
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    """Everything long-lived: created at start-up, closed at shutdown, in reverse order."""
    settings = app[SETTINGS]
    layout = CacheLayout(settings.cache_dir)
    await asyncio.to_thread(layout.prepare)
    meta: MetadataStore = (
        RedisStore(settings.redis_url, settings.redis_prefix)
        if settings.redis_url
        else EmbeddedStore()
    )
    await meta.start()
    user_agent = f"mirror/{__version__}"
    upstreams = [
        UpstreamRegistry(upstream, make_session(upstream, user_agent), meta)
        for upstream in settings.upstreams
    ]
    blob_store = BlobStore(layout)
    own_caps = {u.name: u.max_fills or settings.max_fills for u in settings.upstreams}
    slots = FillSlots(settings.max_fills, own_caps.__getitem__, settings.fill_wait)
    fills = Fills(blob_store, layout.spool, slots)
    sizes = BlobSizes()
    app[ROUTER] = Router(upstreams)
    app[MANIFESTS] = ManifestService(
        ManifestStore(layout, sizes), TagStore(layout), meta, layout.spool
    )
    app[BLOBS] = BlobService(blob_store, fills, meta, layout.spool, sizes)
    app[LISTINGS] = ListingService()
    app[META] = meta
    app[HOT_ANSWERS] = HotAnswers()
    app[READINESS] = readiness = Readiness(layout, settings.redis_url)
    try:
        yield
    finally:
        await fills.close()
        for upstream in upstreams:
            await upstream.close()
        await meta.close()
        await readiness.close()
