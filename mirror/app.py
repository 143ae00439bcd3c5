"""`create_app(settings)`: builds the whole mirror; every resource lives in one cleanup context."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from mirror import log
from mirror.api.hot import HotAnswers
from mirror.api.keys import BLOBS, HOT_ANSWERS, LISTINGS, MANIFESTS, META, ROUTER, SETTINGS
from mirror.api.middlewares import request_middleware
from mirror.api.routes import setup_routes
from mirror.config import Settings
from mirror.images.schedule import PrefetchSchedule
from mirror.pullthrough.offline import CachedListings
from mirror.services import open_services


def create_app(settings: Settings) -> web.Application:
    """The mirror as an aiohttp application, ready for `web.run_app` or a test client."""
    # A pull-only registry reads no request bodies: refuse big ones before the handler runs.
    app = web.Application(middlewares=[request_middleware()], client_max_size=64 << 10)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_services)
    setup_routes(app)
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    """Everything long-lived: created at start-up, closed at shutdown."""
    settings = app[SETTINGS]
    async with open_services(settings) as services:
        app[ROUTER] = services.router
        app[MANIFESTS] = services.manifests
        app[BLOBS] = services.blobs
        app[LISTINGS] = CachedListings(services.tag_store)
        app[META] = services.meta
        app[HOT_ANSWERS] = HotAnswers()
        schedule = None
        if settings.prefetch is not None and settings.upstream.offline:
            log.get_logger().warning("offline: the [prefetch] table is not refreshed")
        elif settings.prefetch is not None:
            schedule = PrefetchSchedule(services, settings.prefetch)
            schedule.start()
        try:
            yield
        finally:
            if schedule is not None:
                await schedule.close()
