"""What the mirror knows of an upstream's health: a circuit breaker and Docker Hub's rate limit.

Both live in the metadata store as expiring flags, so every worker and replica sharing it stops
calling a dead upstream, or spares a nearly spent pull limit, together.

- Circuit breaker: after `breaker_failures` consecutive connect failures or timeouts the circuit
  opens for `breaker_reset` seconds; calls fail at once (cached answers are served stale) while a
  background probe (`GET /v2/`) waits for the upstream, doubling the interval up to 5 minutes.
- Rate limit: Docker Hub sends `RateLimit-Remaining: 20;w=21600` (and the limit) on GET and HEAD.
  Below `rate_limit_reserve`, tags that have a cached answer are not revalidated until the window
  has passed; a 429 does the same for its `Retry-After`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from multidict import CIMultiDictProxy

from mirror import log
from mirror.config.upstreams import UpstreamSettings
from mirror.meta.store import MetadataStore
from mirror.upstream import headers as parse

MAX_OPEN = 300.0


class UpstreamHealth:
    """The breaker and the rate-limit reserve of one upstream, shared through the store."""

    def __init__(
        self,
        settings: UpstreamSettings,
        meta: MetadataStore,
        probe: Callable[[], Awaitable[bool]],
    ) -> None:
        self._settings = settings
        self._meta = meta
        self._probe = probe
        self._failures = 0
        self._prober: asyncio.Task[None] | None = None
        self._breaker_key = f"breaker:{settings.name}"
        self._spare_key = f"spare:{settings.name}"

    async def is_open(self) -> bool:
        """Whether calls to this upstream are suspended (the circuit is open)."""
        return await self._meta.has_flag(self._breaker_key)

    async def is_sparing(self) -> bool:
        """Whether the upstream's pull limit is nearly spent: revalidate nothing cached."""
        return await self._meta.has_flag(self._spare_key)

    async def failed(self) -> None:
        """A connect failure or timeout: count it, and open the circuit at the threshold."""
        self._failures += 1
        if self._failures < self._settings.breaker_failures or self._prober is not None:
            return
        interval = self._settings.breaker_reset
        log.get_logger().warning(
            "upstream failing; circuit open",
            upstream=self._settings.name,
            failures=self._failures,
            retry_in=interval,
        )
        await self._meta.set_flag(self._breaker_key, interval)
        self._prober = asyncio.create_task(self._probe_until_healthy(interval))

    def answered(self) -> None:
        """Any HTTP answer shows the upstream is reachable."""
        self._failures = 0

    async def _probe_until_healthy(self, interval: float) -> None:
        try:
            while True:
                await asyncio.sleep(interval)
                if await self._probe():
                    break
                interval = min(interval * 2, MAX_OPEN)
                await self._meta.set_flag(self._breaker_key, interval + 1)
            self._failures = 0
            await self._meta.clear_flag(self._breaker_key)
            log.get_logger().info(
                "upstream answers again; circuit closed", upstream=self._settings.name
            )
        finally:
            self._prober = None

    async def saw_headers(self, headers: CIMultiDictProxy[str]) -> None:
        """Read Docker Hub's rate-limit headers and spare the limit when it runs low."""
        remaining = parse.rate_limit(headers.get("RateLimit-Remaining"))
        if remaining is None:
            return
        limit = parse.rate_limit(headers.get("RateLimit-Limit"))
        window = remaining.window or (limit.window if limit else None) or 3600.0
        await self._meta.note_upstream(
            self._settings.name,
            {
                "ratelimit_remaining": str(remaining.count),
                "ratelimit_limit": str(limit.count) if limit else "",
                "seen_at": f"{time.time():.0f}",
            },
        )
        if remaining.count < self._settings.rate_limit_reserve:
            await self.spare(window, f"{remaining.count} pulls left")

    async def spare(self, seconds: float, reason: str) -> None:
        """Revalidate no cached tag for `seconds` (clamped: no upstream can pin this)."""
        seconds = parse.clamp_window(seconds)
        if not await self._meta.has_flag(self._spare_key):
            log.get_logger().warning(
                "sparing upstream pull limit: cached tags are not revalidated",
                upstream=self._settings.name,
                reason=reason,
                seconds=seconds,
            )
        await self._meta.set_flag(self._spare_key, seconds)

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
