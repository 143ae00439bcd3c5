"""The metrics of one server process: counted as requests are answered, sampled from the parts
that hold state (downloads, slots, Redis), exported by `exposition`.

The request hook runs on every request, hot manifest hits included, so it only adds to plain
counts in memory; they reach the metric families (each label combination resolved once) when
the values are read out, and once a second in each worker of several. With `--workers N` every
update of a family is a locked write to a shared file: that stays off the hot path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, values

from mirror.log import RequestFacts
from mirror.meta.redis import RedisStore
from mirror.meta.store import MetadataStore
from mirror.metrics.activity import Activity, read_snapshot
from mirror.metrics.families import Families
from mirror.metrics.serving import MULTIPROCESS_ENV, worker_slot
from mirror.metrics.upstream import UpstreamMetrics
from mirror.pullthrough.running_fills import Fills
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

    `kinds` maps the canonical path of `/v2/` routes to the kind of request they take; other
    routes under `/v2/` are "other", and requests outside it (health probes, the admin
    endpoints, unknown paths) are not counted. `directory` is the
    directory several worker processes add their values up in, or None for one process; there
    this one's values are in the files of its slot, which it takes over from the worker that had
    it before (counters go on from that one's counts).
    """

    def __init__(
        self,
        kinds: Mapping[str, str],
        *,
        redis: bool,
        directory: Path | None = None,
    ) -> None:
        if directory is not None and values.ValueClass is values.MutexValue:
            raise RuntimeError(
                f"prometheus_client was imported before {MULTIPROCESS_ENV} was set: "
                "the workers' values would not add up"
            )
        self.slot = worker_slot()
        if directory is not None:
            # Before any family: each value opens its file when it is made. prometheus_client
            # leaves this factory unannotated.
            values.ValueClass = values.MultiProcessValue(lambda: self.slot)  # type: ignore[no-untyped-call]
        # A `_created` series beside each counter and histogram: multiprocess mode has none, so
        # one worker would export series that two do not (and twice the lines for a scrape).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self.families = families = Families(self.registry, redis=redis)
        self.activity = Activity()
        self.directory = directory
        if directory is not None:
            self.activity.restore(read_snapshot(directory, self.slot))
        # The cache's own measure, once it keeps one; the status page says "not measured".
        self.cache_usage: Callable[[], CacheUsage | None] = lambda: None
        self._kinds = kinds
        # Counted since the last flush: requests by (kind, status, cache), bytes by cache.
        self._requests: dict[tuple[str, int, str | None], int] = {}
        self._bytes: dict[str | None, int] = {}
        # Every cache result has its series from the start, so dashboards find them all.
        self._served = {
            cache: families.served_bytes.labels(cache or "none") for cache in CACHE_RESULTS
        }
        self._counters: dict[tuple[str, int, str | None], Counter] = {}
        self._upstreams: dict[str, UpstreamMetrics] = {}
        self._sources: _Sources | None = None
        if not _value(families.started):  # a slot keeps its first worker's start
            families.started.set(time.time())

    def upstream(self, registry: str) -> UpstreamMetrics:
        """The stats one upstream reports to (`mirror.metrics.hooks.UpstreamStats`)."""
        if registry not in self._upstreams:
            self._upstreams[registry] = UpstreamMetrics(self.families, registry)
        return self._upstreams[registry]

    def observe(
        self,
        request: web.Request,
        status: int,
        facts: RequestFacts,
        sent: int,
        kind: str | None = None,
    ) -> None:
        """Count an answered request: what it was (`kind`, or what its route tells), how it
        ended, what it cost (the bytes of its log line)."""
        if kind is None:
            resource = request.match_info.route.resource
            if resource is None:  # the router's own answer: no route
                return
            kind = self._kinds.get(resource.canonical)
            if kind is None:
                if not request.path.startswith("/v2"):
                    return
                kind = "other"
        self.count(kind, request.method, status, facts, sent)
        if facts.cache == "miss" and facts.repo is not None and facts.upstream is not None:
            reference = request.match_info.get("reference") or request.match_info.get("digest")
            image = f"{facts.upstream}/{facts.repo}"
            self.activity.missed(kind, image, reference or "", status, sent)

    def count(self, kind: str, method: str, status: int, facts: RequestFacts, sent: int) -> None:
        """Count an answered request whose kind is known (all a ready answer needs)."""
        cache = facts.cache
        key = (kind, status, cache)
        self._requests[key] = self._requests.get(key, 0) + 1
        if sent:
            self._bytes[cache] = self._bytes.get(cache, 0) + sent
        if (
            kind == "manifest"
            and status == 200
            and method == "GET"
            and facts.repo is not None
            and facts.upstream is not None
        ):
            self.activity.pulled(facts.upstream, facts.repo)

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
        """Bring the families up to date: the requests counted since the last time, and the
        gauges from the parts' current state (before an export, and every second in each worker
        of several, whose values another worker exports)."""
        self._flush()
        sources = self._sources
        if sources is None:
            return
        families = self.families
        families.fills.set(sources.fills.in_flight)
        families.slots_used.set(sources.slots.in_use)
        families.slots_queued.set(sources.slots.waiting)
        if families.redis_up is not None and isinstance(sources.meta, RedisStore):
            families.redis_up.set(1 if sources.meta.available else 0)

    def _flush(self) -> None:
        requests, self._requests = self._requests, {}
        for key, count in requests.items():
            counter = self._counters.get(key)
            if counter is None:
                kind, status, cache = key
                counter = self.families.requests.labels(kind, str(status), cache or "none")
                self._counters[key] = counter
            counter.inc(count)
        sent, self._bytes = self._bytes, {}
        for cache, count in sent.items():
            if cache not in self._served:  # a cache result this version does not name
                self._served[cache] = self.families.served_bytes.labels(cache or "none")
            self._served[cache].inc(count)


def _value(gauge: Gauge) -> float:
    """A gauge's value in this process (with several workers, what its slot's file holds)."""
    (family,) = gauge.collect()
    return float(family.samples[0].value)
