"""Typed application state: every shared object is reached through one of these keys."""

from __future__ import annotations

from aiohttp import web

from mirror.api.hot import HotAnswers
from mirror.cache.upkeep import Upkeep
from mirror.config import Settings
from mirror.meta.store import MetadataStore
from mirror.pullthrough.blobs import BlobService
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
UPKEEP = web.AppKey("upkeep", Upkeep)
