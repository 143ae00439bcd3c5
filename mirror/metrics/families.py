"""Every metric the mirror exports, defined once: names, labels, help and how the values of
several worker processes combine (`multiprocess_mode`, for gauges).

The names are an interface: dashboards and alerts are written against them, and the README
lists each one.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Time to an upstream's answer: from a few milliseconds (a nearby registry) to the read timeout.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Families:
    """The metric families of one app, on its own registry."""

    def __init__(self, registry: CollectorRegistry, *, redis: bool) -> None:
        r = registry
        self.requests = Counter(
            "mirror_requests",
            "Requests under /v2/ answered, by kind (manifest, blob, tags, referrers, other), "
            "status and cache result (hit, miss, stale, coalesced, none)",
            ("kind", "status", "cache"),
            registry=r,
        )
        self.served_bytes = Counter(
            "mirror_served_bytes",
            "Body bytes sent to clients, by cache result",
            ("cache",),
            registry=r,
        )
        self.upstream_bytes = Counter(
            "mirror_upstream_bytes",
            "Body bytes received from each upstream (manifests, blobs, tag lists, referrers)",
            ("registry",),
            registry=r,
        )
        self.upstream_requests = Counter(
            "mirror_upstream_requests",
            "Requests to upstreams that were answered, by registry, method and status",
            ("registry", "method", "status"),
            registry=r,
        )
        self.upstream_latency = Histogram(
            "mirror_upstream_request_duration_seconds",
            "Time from sending a request to an upstream to its answer's headers",
            ("registry",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "mirror_upstream_errors",
            "Exchanges with an upstream that failed, by registry and kind "
            "(connect, timeout, refused, body, other)",
            ("registry", "kind"),
            registry=r,
        )
        # The last value any process saw, even one that has since exited.
        self.ratelimit_remaining = Gauge(
            "mirror_upstream_ratelimit_remaining",
            "Pulls left in the upstream's window, from its last RateLimit-Remaining header",
            ("registry",),
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.ratelimit_limit = Gauge(
            "mirror_upstream_ratelimit_limit",
            "Pulls allowed in the upstream's window, from its last RateLimit-Limit header",
            ("registry",),
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.breaker_open = Gauge(
            "mirror_upstream_breaker_open",
            "1 while a process of this mirror holds the upstream's circuit open, else 0",
            ("registry",),
            multiprocess_mode="livemax",
            registry=r,
        )
        self.fills = Gauge(
            "mirror_fills_in_flight",
            "Blob downloads running (streaming, waiting for a slot, or committing)",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.fill_readers = Gauge(
            "mirror_fill_readers",
            "Clients being sent a blob while it downloads",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.slots_used = Gauge(
            "mirror_download_slots_used",
            "Download slots taken (at most max_fills per process)",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.slots_queued = Gauge(
            "mirror_download_slots_queued",
            "Downloads waiting for a slot",
            multiprocess_mode="livesum",
            registry=r,
        )
        # Exported only with --redis-url: a 0 without Redis would read as an outage.
        self.redis_up = (
            Gauge(
                "mirror_redis_up",
                "1 while Redis answers, 0 while the mirror works without it",
                multiprocess_mode="livemin",
                registry=r,
            )
            if redis
            else None
        )
        self.evictions = Counter(
            "mirror_cache_evictions",
            "Files removed from the cache to keep it under its size limit",
            registry=r,
        )
        # The earliest worker's start: counters count from then.
        self.started = Gauge(
            "mirror_start_time_seconds",
            "When the server started, in seconds since the epoch",
            multiprocess_mode="min",
            registry=r,
        )
