"""What one upstream's requests are counted into: the label children resolved once per upstream
(and once per status or kind of error), so a report is an increment, not a label lookup."""

from __future__ import annotations

import aiohttp
from prometheus_client import Counter, Gauge

from mirror.metrics.families import Families
from mirror.upstream.targets import RefusedAddress


def error_kind(error: BaseException) -> str:
    """How an exchange failed, in the few words the errors metric uses."""
    if isinstance(error, aiohttp.ClientConnectorError):
        return "refused" if isinstance(error.os_error, RefusedAddress) else "connect"
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "connect"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "body"
    return "other"


class UpstreamMetrics:
    """The `UpstreamStats` of one registry, counted into the app's metric families."""

    def __init__(self, families: Families, registry: str) -> None:
        self._families = families
        self._registry = registry
        self._bytes = families.upstream_bytes.labels(registry)
        self._latency = families.upstream_latency.labels(registry)
        self._breaker = families.breaker_open.labels(registry)
        self._breaker.set(0)
        self._answers: dict[tuple[str, int], Counter] = {}
        self._errors: dict[str, Counter] = {}
        # Created at the first header seen: a 0 for a registry that sends none would read as
        # a spent limit.
        self._remaining: Gauge | None = None
        self._limit: Gauge | None = None

    def received(self, count: int) -> None:
        self._bytes.inc(count)

    def answered(self, method: str, status: int, seconds: float) -> None:
        child = self._answers.get((method, status))
        if child is None:
            child = self._families.upstream_requests.labels(self._registry, method, str(status))
            self._answers[method, status] = child
        child.inc()
        self._latency.observe(seconds)

    def failed(self, error: BaseException) -> None:
        kind = error_kind(error)
        child = self._errors.get(kind)
        if child is None:
            child = self._errors[kind] = self._families.upstream_errors.labels(self._registry, kind)
        child.inc()

    def breaker(self, is_open: bool) -> None:
        self._breaker.set(1 if is_open else 0)

    def rate_limit(self, remaining: int, limit: int | None) -> None:
        if self._remaining is None:
            self._remaining = self._families.ratelimit_remaining.labels(self._registry)
        self._remaining.set(remaining)
        if limit is not None:
            if self._limit is None:
                self._limit = self._families.ratelimit_limit.labels(self._registry)
            self._limit.set(limit)
