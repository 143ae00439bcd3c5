"""`create_app(settings)`: builds the whole mirror; every resource lives in one cleanup context."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from mirror import log
from mirror.api.admin import add_admin_routes, admin_listener
from mirror.api.auth import setup_client_auth
from mirror.api.hot import HotAnswers
from mirror.api.keys import (
    ACCESS,
    BLOBS,
    EXPOSITION,
    HOLDINGS,
    HOT_ANSWERS,
    LISTINGS,
    LOCAL,
    MANIFESTS,
    META,
    METRICS,
    READINESS,
    REQUEST_IDS,
    ROUTER,
    SETTINGS,
    UPKEEP,
)
from mirror.api.middlewares import RequestIds, request_middleware
from mirror.api.readiness import Readiness
from mirror.api.routes import REQUEST_KINDS, setup_routes
from mirror.auth.access import AccessPolicy
from mirror.config import Settings
from mirror.images.schedule import PrefetchSchedule
from mirror.local.registry import LocalRegistry
from mirror.metrics.exposition import Exposition, Publisher
from mirror.metrics.hooks import unobserved
from mirror.metrics.recorder import CacheUsage, Metrics
from mirror.metrics.serving import shared_directory
from mirror.pullthrough.holdings import RepoHoldings
from mirror.pullthrough.listings import ListingService
from mirror.services import open_services
from mirror.upstream.targets import Network


def create_app(
    settings: Settings,
    network: Network | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The mirror as an aiohttp application, ready for `mirror.server` or a test client;
    `network` (how upstream names resolve, which addresses are public) is the system's unless a
    test substitutes its own; `clock` (unix time) dates every use of the cache, for eviction."""
    metrics = None
    if settings.metrics:
        metrics = Metrics(
            REQUEST_KINDS, redis=settings.redis_url is not None, directory=shared_directory()
        )
    observe = metrics.observe if metrics is not None else None
    # No handler reads a body whole: pushed manifests and blobs are streamed under limits of
    # their own. Anything else is refused before the handler runs.
    ids = RequestIds()
    app = web.Application(middlewares=[request_middleware(ids, observe)], client_max_size=64 << 10)
    app[SETTINGS] = settings
    app[REQUEST_IDS] = ids
    app[ACCESS] = AccessPolicy(settings.access)
    if metrics is not None:
        app[METRICS] = metrics
        app[EXPOSITION] = Exposition(metrics, settings.cache_dir)
    app.cleanup_ctx.append(functools.partial(_services, network=network or Network(), clock=clock))
    setup_routes(app)
    setup_client_auth(app, settings)
    if metrics is not None and settings.admin_listen is None:
        add_admin_routes(app)
    return app


async def _services(
    app: web.Application, *, network: Network, clock: Callable[[], float]
) -> AsyncIterator[None]:
    """Everything long-lived: created at start-up, closed at shutdown, in reverse order."""
    settings = app[SETTINGS]
    metrics = app.get(METRICS)
    stats = metrics.upstream if metrics is not None else unobserved
    async with open_services(settings, network, stats, clock) as services:
        app[ROUTER] = services.router
        app[MANIFESTS] = services.manifests
        app[BLOBS] = services.blobs
        app[LISTINGS] = ListingService(services.tag_store)
        if settings.access:
            app[HOLDINGS] = RepoHoldings(
                services.layout, services.tag_store, services.manifest_store
            )
        app[META] = services.meta
        app[UPKEEP] = services.upkeep
        app[HOT_ANSWERS] = HotAnswers()
        app[READINESS] = readiness = Readiness(services.layout, settings.redis_url)
        app[LOCAL] = local = LocalRegistry(
            settings,
            services.layout,
            services.blob_store,
            services.manifest_store,
            clock=clock,
        )
        await local.start()
        schedule = None
        if settings.prefetch is not None and settings.upstream.offline:
            log.get_logger().warning("offline: the [prefetch] table is not refreshed")
        elif settings.prefetch is not None:
            schedule = PrefetchSchedule(services, settings.prefetch)
            schedule.start()
        try:
            async with contextlib.AsyncExitStack() as stack:
                if metrics is not None:
                    metrics.watch(services.fills, services.slots, services.meta)
                    evictor = services.upkeep.evictor
                    metrics.cache_usage = lambda: (
                        None if (m := evictor.measured()) is None else CacheUsage(*m)
                    )
                    evictor.on_evicted = metrics.evicted
                    publisher = Publisher(metrics)
                    publisher.start()
                    stack.push_async_callback(publisher.close)
                    if settings.admin_listen is not None:
                        listener = admin_listener(app, settings, settings.admin_listen)
                        await stack.enter_async_context(listener)
                yield
        finally:
            if schedule is not None:
                await schedule.close()
            await local.close()
            await readiness.close()
