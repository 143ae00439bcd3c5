"""The metrics of one server process: counted as requests are answered, sampled from the parts
that hold state (downloads, slots, Redis), exported by `exposition`.

The request hook runs on every request, hot manifest hits included, so it resolves each label
combination once and keeps the children: a request costs a dictionary lookup and two increments.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, values

from mirror.log import RequestFacts
from mirror.meta.redis import RedisStore
from mirror.meta.store import MetadataStore
from mirror.metrics.activity import Activity
from mirror.metrics.families import Families
from mirror.metrics.serving import MULTIPROCESS_ENV
from mirror.metrics.upstream import UpstreamMetrics
from mirror.pullthrough.fills import Fills
from mirror.pullthrough.slots import FillSlots

CACHE_RESULTS = ("hit", "miss", "stale", "coalesced", None)


@dataclass(frozen=True, slots=True)
class CacheUsage:
    """The cache's size and its cap, as the cache itself measures them."""

    size: int
    cap: int | None


@dataclass(frozen=True, slots=True)
class _Sources:
    fills: Fills
    slots: FillSlots
    meta: MetadataStore


class Metrics:
    """Every metric of one app, and the bounded activity the status page lists.

    `kinds` maps each `/v2/` route handler to its request kind; requests to other handlers
    (health probes, the admin endpoints, unknown paths) are not counted. `directory` is the
    directory several worker processes add their values up in, or None for one process.
    """

    def __init__(
        self,
        kinds: Mapping[Callable[..., Any], str],
        *,
        redis: bool,
        directory: Path | None = None,
    ) -> None:
        if directory is not None and values.ValueClass is values.MutexValue:
            raise RuntimeError(
                f"prometheus_client was imported before {MULTIPROCESS_ENV} was set: "
                "the workers' values would not add up"
            )
        self.registry = CollectorRegistry()
        self.families = families = Families(self.registry, redis=redis)
        self.activity = Activity()
        self.directory = directory
        # The cache's own measure, once it keeps one; the status page says "not measured".
        self.cache_usage: Callable[[], CacheUsage | None] = lambda: None
        self._kinds = kinds
        self._served = {
            cache: families.served_bytes.labels(cache or "none") for cache in CACHE_RESULTS
        }
        self._requests: dict[tuple[str, int, str | None], tuple[Counter, Counter]] = {}
        self._upstreams: dict[str, UpstreamMetrics] = {}
        self._sources: _Sources | None = None
        families.started.set(time.time())

    def upstream(self, registry: str) -> UpstreamMetrics:
        """The stats one upstream reports to (`mirror.metrics.hooks.UpstreamStats`)."""
        if registry not in self._upstreams:
            self._upstreams[registry] = UpstreamMetrics(self.families, registry)
        return self._upstreams[registry]

    def observe(self, request: web.Request, status: int, facts: RequestFacts, sent: int) -> None:
        """Count an answered request: what it was, how it ended, what it cost (the bytes of
        its log line)."""
        kind = self._kinds.get(request.match_info.handler)
        if kind is None:
            return
        cache = facts.cache
        key = (kind, status, cache)
        children = self._requests.get(key)
        if children is None:
            counted = self.families.requests.labels(kind, str(status), cache or "none")
            children = self._requests[key] = (counted, self._served[cache])
        children[0].inc()
        if sent:
            children[1].inc(sent)
        if facts.repo is None or facts.upstream is None:
            return
        if kind == "manifest" and status == 200 and request.method == "GET":
            self.activity.pulled(facts.upstream, facts.repo)
        if cache == "miss":
            reference = request.match_info.get("reference") or request.match_info.get("digest")
            image = f"{facts.upstream}/{facts.repo}"
            self.activity.missed(kind, image, reference or "", status, sent)

    @contextmanager
    def streaming(self) -> Iterator[None]:
        """Count a client being sent a blob as it downloads, for as long as that lasts."""
        self.families.fill_readers.inc()
        try:
            yield
        finally:
            self.families.fill_readers.dec()

    def evicted(self, count: int = 1) -> None:
        """Files the cache removed to stay under its size limit."""
        self.families.evictions.inc(count)

    def watch(self, fills: Fills, slots: FillSlots, meta: MetadataStore) -> None:
        """The parts whose state the gauges sample."""
        self._sources = _Sources(fills, slots, meta)

    def sample(self) -> None:
        """Set the gauges from the parts' current state (before an export, and every second
        in each worker of several, whose gauges another worker exports)."""
        sources = self._sources
        if sources is None:
            return
        families = self.families
        families.fills.set(sources.fills.in_flight)
        families.slots_used.set(sources.slots.in_use)
        families.slots_queued.set(sources.slots.waiting)
        if families.redis_up is not None and isinstance(sources.meta, RedisStore):
            families.redis_up.set(1 if sources.meta.available else 0)
