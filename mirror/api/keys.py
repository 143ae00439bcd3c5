"""Typed application state: every shared object is reached through one of these keys."""

from __future__ import annotations

from aiohttp import web

from mirror.api.hot import HotAnswers
from mirror.api.middlewares import RequestIds
from mirror.api.readiness import Readiness
from mirror.auth.access import AccessPolicy
from mirror.cache.upkeep import Upkeep
from mirror.config import Settings
from mirror.local.registry import LocalRegistry
from mirror.meta.store import MetadataStore
from mirror.metrics.exposition import Exposition
from mirror.metrics.recorder import Metrics
from mirror.pullthrough.blobs import BlobService
from mirror.pullthrough.holdings import RepoHoldings
from mirror.pullthrough.listings import ListingService
from mirror.pullthrough.manifests import ManifestService
from mirror.pullthrough.routing import Router

SETTINGS = web.AppKey("settings", Settings)
ROUTER = web.AppKey("router", Router)
MANIFESTS = web.AppKey("manifests", ManifestService)
BLOBS = web.AppKey("blobs", BlobService)
LISTINGS = web.AppKey("listings", ListingService)
META = web.AppKey("meta", MetadataStore)
HOT_ANSWERS = web.AppKey("hot_answers", HotAnswers)
REQUEST_IDS = web.AppKey("request_ids", RequestIds)
READINESS = web.AppKey("readiness", Readiness)
ACCESS = web.AppKey("access", AccessPolicy)
LOCAL = web.AppKey("local", LocalRegistry)
# Only with `[[access]]` rules: which content each mirrored repository may be answered with.
HOLDINGS = web.AppKey("holdings", RepoHoldings)
# Who the request logged in as (absent: nobody, or no --htpasswd); set by the auth middleware.
USER = web.RequestKey("user", str)
# Only with metrics on (`metrics = false` leaves them out).
METRICS = web.AppKey("metrics", Metrics)
EXPOSITION = web.AppKey("exposition", Exposition)
UPKEEP = web.AppKey("upkeep", Upkeep)
