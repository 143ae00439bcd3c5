"""`create_app(settings)`: builds the whole mirror; every resource lives in one cleanup context."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from functools import partial

from aiohttp import web

from mirror import __version__
from mirror.api.hot import HotAnswers
from mirror.api.keys import (
    BLOBS,
    HOT_ANSWERS,
    LISTINGS,
    MANIFESTS,
    META,
    ROUTER,
    SETTINGS,
    UPKEEP,
)
from mirror.api.middlewares import request_middleware
from mirror.api.routes import setup_routes
from mirror.cache.upkeep import Upkeep
from mirror.config import Settings
from mirror.meta.redis import RedisStore
from mirror.meta.store import EmbeddedStore, MetadataStore
from mirror.pullthrough.blobs import BlobService
from mirror.pullthrough.fills import Fills
from mirror.pullthrough.listings import ListingService
from mirror.pullthrough.manifests import ManifestService
from mirror.pullthrough.routing import Router
from mirror.storage.layout import CacheLayout
from mirror.upstream.registry import UpstreamRegistry, make_session


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> web.Application:
    """The whole mirror as an aiohttp application; `clock` (unix time) dates every use of the
    cache, for eviction."""
    # A pull-only registry reads no request bodies: refuse big ones before the handler runs.
    app = web.Application(middlewares=[request_middleware()], client_max_size=64 << 10)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(partial(_services, clock=clock))
    setup_routes(app)
    return app


async def _services(app: web.Application, clock: Callable[[], float]) -> AsyncIterator[None]:
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
    upkeep = Upkeep(layout, meta, settings, clock)
    stores = upkeep.stores
    fills = Fills(stores.blobs, space=upkeep.evictor)
    app[ROUTER] = Router(upstreams)
    app[MANIFESTS] = ManifestService(
        stores.manifests, stores.tags, meta, upkeep.access, layout.spool
    )
    app[BLOBS] = BlobService(stores.blobs, fills, upkeep.access, layout.spool)
    app[LISTINGS] = ListingService()
    app[META] = meta
    app[UPKEEP] = upkeep
    app[HOT_ANSWERS] = HotAnswers()
    await upkeep.start()
    try:
        yield
    finally:
        await fills.close()
        await upkeep.close()
        for upstream in upstreams:
            await upstream.close()
        await meta.close()
