"""Whether this process can take traffic: a writable cache, and Redis when one is configured
(`mirror.api.health` says why only the cache decides)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from mirror import log
from mirror.meta.redis_url import REDIS_FAILURES, RedisUrl
from mirror.storage.layout import CacheLayout
from mirror.storage.spool import open_spool

READY, DEGRADED, NOT_READY = "ready", "degraded", "not ready"


@dataclass(frozen=True, slots=True)
class Report:
    """What `/readyz` answers: an overall status and one line per dependency."""

    status: str
    checks: dict[str, str] = field(default_factory=dict)
    message: str | None = None

    @property
    def http_status(self) -> int:
        return 503 if self.status == NOT_READY else 200

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"status": self.status, "checks": self.checks}
        if self.message:
            body["message"] = self.message
        return body


class Readiness:
    """Checks what a replica needs to take traffic: a writable cache, and Redis if configured.

    Each check is bounded by `timeout`. A write stuck in the kernel (a network filesystem gone)
    cannot be cancelled, so while one is still running no other is started: probes every few
    seconds must not pile up threads that would starve the cache's own disk work.
    """

    def __init__(self, layout: CacheLayout, redis_url: str | None, *, timeout: float = 2.0) -> None:
        self._layout = layout
        self._timeout = timeout
        # A connection of its own: the answer is whether Redis answers now, whatever the
        # metadata store last noticed.
        self._redis = RedisUrl.parse(redis_url).connect(timeout=timeout) if redis_url else None
        self._write: asyncio.Future[None] | None = None
        self._last = READY

    async def check(self) -> Report:
        cache, redis = await asyncio.gather(self._check_cache(), self._check_redis())
        checks = {"cache": cache, "redis": redis}
        if cache != "ok":
            report = Report(NOT_READY, checks, "the cache directory cannot be written")
        elif redis.startswith("unreachable"):
            report = Report(
                DEGRADED,
                checks,
                "Redis is unreachable: serving from the cache directory with an in-process "
                "store, so freshness and upstream health are not shared with other processes",
            )
        else:
            report = Report(READY, checks)
        self._note(report)
        return report

    async def _check_cache(self) -> str:
        if self._write is None or self._write.done():
            self._write = asyncio.ensure_future(asyncio.to_thread(self._write_probe))
        try:
            await asyncio.wait_for(asyncio.shield(self._write), self._timeout)
        except TimeoutError:
            return "not writable: a write did not finish in time"
        except OSError as e:
            return f"not writable: {e.strerror or type(e).__name__}"
        return "ok"

    def _write_probe(self) -> None:
        """Create, write and remove a small spool file, as every fill does (a full disk
        refuses the write, a read-only one the creation)."""
        path = self._layout.spool_file("readyz")
        try:
            with open_spool(path) as f:
                f.write(b"ready\n")
                f.flush()
        finally:
            with contextlib.suppress(OSError):
                path.unlink()

    async def _check_redis(self) -> str:
        if self._redis is None:
            return "not configured"
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.client.ping()
        except (*REDIS_FAILURES, TimeoutError) as e:
            return f"unreachable: {type(e).__name__}"
        return "ok"

    def _note(self, report: Report) -> None:
        """Log a change of readiness once, with its reasons; probes repeat every few seconds."""
        if report.status == self._last:
            return
        self._last = report.status
        logger = log.get_logger()
        emit = logger.info if report.status == READY else logger.warning
        emit("readiness changed", status=report.status, **report.checks)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
