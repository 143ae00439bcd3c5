"""The `[prefetch]` schedule of a running server: its images refreshed every `interval`.

A round revalidates each tag the way a pull would (an upstream HEAD once its TTL has passed,
which Docker Hub does not count) and fetches only what changed. Under `--workers N`, and across
replicas sharing the cache directory, one process runs each round: it holds
`<cache-dir>/prefetch.lock`, which records when the last round began. An upstream whose circuit
is open, or whose pull limit is being spared, is left alone until the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mirror import log
from mirror.config.prefetch import PrefetchSettings
from mirror.errors import MirrorError
from mirror.images.prefetch import Prefetched, Prefetcher, PrefetchFailed
from mirror.images.targets import resolve
from mirror.oci.reference import ImageReference
from mirror.services import Services

LOCK_FILE = "prefetch.lock"
# How soon to look again when another process is running a round right now.
BUSY_RETRY = 30.0


@dataclass(frozen=True, slots=True)
class Skipped:
    name: ImageReference
    reason: str


@dataclass(frozen=True, slots=True)
class Failed:
    name: ImageReference
    error: str


Outcome = Prefetched | Skipped | Failed


class Round:
    """The right to run one round, held (as an flock) until `release()`."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        os.close(self._fd)


class RoundLock:
    """Decides which process runs the next round, and when it is due."""

    def __init__(self, path: Path, interval: float, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._interval = interval
        self._clock = clock

    def try_begin(self) -> Round | float:
        """The round if it is due and nobody runs one; else the seconds to wait."""
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return min(self._interval, BUSY_RETRY)
        now = self._clock()
        try:
            last = float(os.pread(fd, 64, 0) or b"0")
        except ValueError:
            last = 0.0  # damaged: a round is due
        # A stamp from the future (a clock set back) counts as no stamp.
        if last <= now < last + self._interval:
            os.close(fd)
            return last + self._interval - now
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{now:.3f}".encode(), 0)
        return Round(fd)


class PrefetchSchedule:
    """A task owned by the app: rounds until the app shuts down."""

    def __init__(
        self,
        services: Services,
        settings: PrefetchSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._services = services
        self._settings = settings
        self._lock = RoundLock(services.layout.root / LOCK_FILE, settings.interval, clock)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                begun = await asyncio.to_thread(self._lock.try_begin)
            except OSError as e:
                log.get_logger().error("prefetch schedule: cannot use its lock file", error=str(e))
                begun = self._settings.interval
            if not isinstance(begun, Round):
                await asyncio.sleep(begun)
                continue
            try:
                await self.run_round()
            except Exception:  # the schedule must outlive any one round
                log.get_logger().exception("prefetch round failed")
            finally:
                begun.release()

    async def run_round(self) -> list[Outcome]:
        """Refresh every image once, one after another: a background refresh need not hurry."""
        prefetcher = Prefetcher(self._services, self._settings.platform)
        outcomes = [await self._refresh(prefetcher, reference) for reference in self._settings.refs]
        log.get_logger().info(
            "prefetch round done",
            images=len(outcomes),
            fetched=prefetcher.fetched,
            cached=prefetcher.cached,
            skipped=sum(isinstance(o, Skipped) for o in outcomes),
            failed=sum(isinstance(o, Failed) for o in outcomes),
        )
        return outcomes

    async def _refresh(self, prefetcher: Prefetcher, reference: ImageReference) -> Outcome:
        logger = log.get_logger()
        try:
            health = resolve(self._services.router, reference).upstream.health
        except MirrorError as e:
            logger.warning("prefetch failed", ref=str(reference), error=e.message)
            return Failed(reference, e.message)
        if await health.is_open():
            reason = "the upstream is failing"
        elif await health.is_sparing():
            reason = "the upstream's pull limit is being spared"
        else:
            try:
                result = await prefetcher.prefetch(reference)
            except PrefetchFailed as e:
                logger.warning("prefetch failed", ref=str(reference), error=str(e))
                return Failed(reference, str(e))
            logger.info(
                "prefetched",
                ref=str(result.name),
                digest=str(result.digest),
                fetched=result.fetched,
                cached=result.cached,
                stale=result.stale,
            )
            return result
        logger.info("prefetch skipped until the next round", ref=str(reference), reason=reason)
        return Skipped(reference, reason)
