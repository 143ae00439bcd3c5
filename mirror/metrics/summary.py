"""The status page's figures, computed from the very samples `/metrics` exports (so the page
and a dashboard never disagree), with the definitions the README gives:

- hit ratio: of manifest and blob requests with a cache result, the share answered without an
  upstream fetch of their own (`hit`, `stale`, `coalesced`);
- bytes saved: bytes served to clients minus bytes received from upstreams (never below 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric

SAVED = ("hit", "stale", "coalesced")
CONTENT = ("manifest", "blob")


@dataclass(frozen=True, slots=True)
class UpstreamSummary:
    name: str
    breaker_open: bool
    ratelimit_remaining: int | None
    ratelimit_limit: int | None
    requests: int  # answered
    errors: int  # exchanges that failed (no answer)
    server_errors: int  # answered 5xx
    mean_latency: float | None  # seconds
    received: int  # body bytes


@dataclass(frozen=True, slots=True)
class Summary:
    started: float | None
    results: dict[str, int]  # manifest and blob requests by cache result
    hit_ratio: float | None
    served: int
    served_from_cache: int  # cache=hit
    received: int
    saved: int
    fills: int
    fill_readers: int
    slots_used: int
    slots_queued: int
    redis_up: bool | None  # None: no Redis configured
    cache_size: int | None
    cache_cap: int | None
    filesystem_size: int | None
    filesystem_free: int | None
    upstreams: list[UpstreamSummary]


class _Samples:
    def __init__(self, families: Iterable[Metric]) -> None:
        self._by_name: dict[str, list[tuple[Mapping[str, str], float]]] = {}
        for family in families:
            for sample in family.samples:
                self._by_name.setdefault(sample.name, []).append((sample.labels, sample.value))

    def total(self, name: str, **match: str) -> float:
        return sum(
            value
            for labels, value in self._by_name.get(name, ())
            if all(labels.get(k) == v for k, v in match.items())
        )

    def one(self, name: str, **match: str) -> float | None:
        found = [
            value
            for labels, value in self._by_name.get(name, ())
            if all(labels.get(k) == v for k, v in match.items())
        ]
        return found[0] if found else None

    def each(self, name: str) -> list[tuple[Mapping[str, str], float]]:
        return self._by_name.get(name, [])


def summarize(families: Iterable[Metric], registries: Iterable[str]) -> Summary:
    """The page's figures; `registries` are the configured upstreams, listed whatever their
    samples."""
    s = _Samples(families)
    results: dict[str, int] = {}
    for labels, value in s.each("mirror_requests_total"):
        if labels.get("kind") in CONTENT and labels.get("cache") != "none":
            results[labels["cache"]] = results.get(labels["cache"], 0) + int(value)
    counted = sum(results.values())
    served = int(s.total("mirror_served_bytes_total"))
    received = int(s.total("mirror_upstream_bytes_total"))
    redis = s.one("mirror_redis_up")
    return Summary(
        started=s.one("mirror_start_time_seconds"),
        results=results,
        hit_ratio=sum(results.get(c, 0) for c in SAVED) / counted if counted else None,
        served=served,
        served_from_cache=int(s.total("mirror_served_bytes_total", cache="hit")),
        received=received,
        saved=max(0, served - received),
        fills=int(s.total("mirror_fills_in_flight")),
        fill_readers=int(s.total("mirror_fill_readers")),
        slots_used=int(s.total("mirror_download_slots_used")),
        slots_queued=int(s.total("mirror_download_slots_queued")),
        redis_up=None if redis is None else redis >= 1,
        cache_size=_whole(s.one("mirror_cache_size_bytes")),
        cache_cap=_whole(s.one("mirror_cache_cap_bytes")),
        filesystem_size=_whole(s.one("mirror_cache_filesystem_size_bytes")),
        filesystem_free=_whole(s.one("mirror_cache_filesystem_free_bytes")),
        upstreams=[_upstream(s, name) for name in registries],
    )


def _upstream(s: _Samples, name: str) -> UpstreamSummary:
    answered = [
        (labels, value)
        for labels, value in s.each("mirror_upstream_requests_total")
        if labels.get("registry") == name
    ]
    count = s.total("mirror_upstream_request_duration_seconds_count", registry=name)
    took = s.total("mirror_upstream_request_duration_seconds_sum", registry=name)
    return UpstreamSummary(
        name=name,
        breaker_open=(s.one("mirror_upstream_breaker_open", registry=name) or 0) >= 1,
        ratelimit_remaining=_whole(s.one("mirror_upstream_ratelimit_remaining", registry=name)),
        ratelimit_limit=_whole(s.one("mirror_upstream_ratelimit_limit", registry=name)),
        requests=int(sum(value for _, value in answered)),
        errors=int(s.total("mirror_upstream_errors_total", registry=name)),
        server_errors=int(
            sum(value for labels, value in answered if labels.get("status", "").startswith("5"))
        ),
        mean_latency=took / count if count else None,
        received=int(s.total("mirror_upstream_bytes_total", registry=name)),
    )


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)
