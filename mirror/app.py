"""`create_app(settings)`: builds the whole mirror; every resource lives in one cleanup context."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from mirror import __version__
from mirror.api.middlewares import request_middleware
from mirror.api.routes import setup_routes
from mirror.config import Settings
from mirror.keys import BLOBS, DOCKER_HUB, MANIFESTS, META, SETTINGS, TAG_LISTS
from mirror.meta.redis import RedisStore
from mirror.meta.store import EmbeddedStore, MetadataStore
from mirror.pullthrough.blobs import BlobService
from mirror.pullthrough.fills import Fills
from mirror.pullthrough.manifests import ManifestService
from mirror.pullthrough.routing import is_docker_hub, upstream_key
from mirror.pullthrough.tags import TagListService
from mirror.storage.blobs import BlobStore
from mirror.storage.layout import CacheLayout
from mirror.storage.manifests import ManifestStore
from mirror.storage.tags import TagStore
from mirror.upstream.registry import UpstreamRegistry, make_session


def create_app(settings: Settings) -> web.Application:
    # A pull-only registry reads no request bodies: refuse big ones before the handler runs.
    app = web.Application(middlewares=[request_middleware], client_max_size=64 << 10)
    app[SETTINGS] = settings
    app[DOCKER_HUB] = is_docker_hub(settings.upstream.url)
    app.cleanup_ctx.append(_services)
    setup_routes(app)
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    """Everything long-lived: created at start-up, closed at shutdown, in reverse order."""
    settings = app[SETTINGS]
    layout = CacheLayout(settings.cache_dir)
    await asyncio.to_thread(layout.prepare)
    session = make_session(settings.upstream, f"mirror/{__version__}")
    meta: MetadataStore = (
        RedisStore(settings.redis_url, settings.redis_prefix)
        if settings.redis_url
        else EmbeddedStore()
    )
    await meta.start()
    upstream = UpstreamRegistry(settings.upstream, session)
    blob_store = BlobStore(layout)
    fills = Fills(upstream, blob_store, layout.spool)
    app[MANIFESTS] = ManifestService(
        upstream,
        upstream_key(settings.upstream.url),
        ManifestStore(layout),
        TagStore(layout),
        meta,
        settings.tag_ttl,
    )
    app[BLOBS] = BlobService(upstream, blob_store, fills, meta, layout.spool)
    app[TAG_LISTS] = TagListService(upstream)
    app[META] = meta
    try:
        yield
    finally:
        await fills.close()
        await meta.close()
        await session.close()
