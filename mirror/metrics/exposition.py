"""Reading the metrics out: the Prometheus text for `/metrics` and the same samples for the
status page, so the two always agree.

With several workers, the values come from every slot's files in the shared directory (those of
running workers, which hold the counts of the workers they replaced: counters count since the
start), and each worker writes its counts, its gauges and its activity snapshot there once a
second. A few values are read only when asked: the file system under the cache, and the cache's
own size and cap when it measures them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from mirror.metrics.activity import Merged, merge, read_snapshots, write_snapshot
from mirror.metrics.recorder import Metrics

PUBLISH_INTERVAL = 1.0


class _OnDemand:
    """Values read at collection time: cheap, and the same whichever process is asked."""

    def __init__(self, metrics: Metrics, cache_dir: Path) -> None:
        self._metrics = metrics
        self._cache_dir = cache_dir

    def collect(self) -> Iterator[Metric]:
        try:
            fs = os.statvfs(self._cache_dir)
        except OSError:
            pass
        else:
            yield GaugeMetricFamily(
                "mirror_cache_filesystem_size_bytes",
                "Size of the file system the cache directory is on",
                value=fs.f_blocks * fs.f_frsize,
            )
            yield GaugeMetricFamily(
                "mirror_cache_filesystem_free_bytes",
                "Space left for the mirror on the cache directory's file system",
                value=fs.f_bavail * fs.f_frsize,
            )
        usage = self._metrics.cache_usage()
        if usage is not None:
            yield GaugeMetricFamily(
                "mirror_cache_size_bytes", "Bytes of content in the cache", value=usage.size
            )
            if usage.cap is not None:
                yield GaugeMetricFamily(
                    "mirror_cache_cap_bytes",
                    "The cache's size limit, in bytes",
                    value=usage.cap,
                )


class Exposition:
    """The app's metrics, collected for export."""

    def __init__(self, metrics: Metrics, cache_dir: Path) -> None:
        self.metrics = metrics
        if metrics.directory is None:
            self._registry = metrics.registry
        else:
            self._registry = CollectorRegistry()
            # prometheus_client leaves this one constructor unannotated.
            MultiProcessCollector(self._registry, str(metrics.directory))  # type: ignore[no-untyped-call]
        self._registry.register(_OnDemand(metrics, cache_dir))

    async def text(self) -> bytes:
        """The Prometheus text format (version 0.0.4) of every metric."""
        self.metrics.sample()
        # Several workers' files are read, and the cache's file system asked: off the loop.
        return await asyncio.to_thread(generate_latest, self._registry)

    async def collect(self) -> list[Metric]:
        """The same samples as `text`, as metric families."""
        self.metrics.sample()
        return await asyncio.to_thread(lambda: list(self._registry.collect()))

    async def activity(self) -> Merged:
        """The most pulled images and latest misses of every worker."""
        own = self.metrics.activity.snapshot()
        directory = self.metrics.directory
        if directory is None:
            return merge([own])
        others = await asyncio.to_thread(read_snapshots, directory, self.metrics.slot)
        return merge([own, *others])


class Publisher:
    """With several workers: writes this one's gauges and activity where the others read
    them, once a second while it runs."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._metrics.directory is not None:
            self._task = asyncio.create_task(self._forever())

    async def _forever(self) -> None:
        while True:
            await self._publish()
            await asyncio.sleep(PUBLISH_INTERVAL)

    async def _publish(self) -> None:
        metrics, directory = self._metrics, self._metrics.directory
        metrics.sample()
        if directory is None or not metrics.activity.changed:
            return
        metrics.activity.changed = False
        snapshot = metrics.activity.snapshot()
        with contextlib.suppress(OSError):  # a full /tmp costs the page, not the server
            await asyncio.to_thread(write_snapshot, directory, metrics.slot, snapshot)

    async def close(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._publish()  # what happened since the last round still counts
