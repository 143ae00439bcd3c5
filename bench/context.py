"""What every phase shares: the plan, a scratch directory, the seeded upstream, memory records."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.memory import MemoryRecord
from bench.plan import Plan
from bench.rss import MemoryPeak
from bench.servers import LogProblems, MirrorServer
from bench.upstream import SeededImage, Upstream


@dataclass
class Context:
    plan: Plan
    workdir: Path
    upstream: Upstream
    small: SeededImage  # a tiny image whose manifest the manifest phase hammers
    mirror_source: Path | None = None  # run the mirror from this source tree
    memory: list[MemoryRecord] = field(default_factory=list)
    _big: SeededImage | None = None
    _small_layers: list[SeededImage] = field(default_factory=list)
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def big(self) -> SeededImage:
        """The image with the blob-sized layer, pushed on first use (it takes a few seconds)."""
        if self._big is None:
            self._big = self.upstream.seed(
                "bench/big", "v1", self.plan.blob_bytes, seed=f"big-{self.plan.blob_bytes}"
            )
        return self._big

    def small_layers(self, count: int) -> list[SeededImage]:
        """`count` images of one 1 MiB layer each, pushed on first use: blobs that a fresh
        server has never seen, for first-byte timings."""
        for number in range(len(self._small_layers), count):
            self._small_layers.append(
                self.upstream.seed(f"bench/layer{number}", "v1", 1 << 20, seed=f"layer-{number}")
            )
        return self._small_layers[:count]

    def scratch(self, name: str) -> Path:
        """A new, empty directory: every server instance gets its own cache and logs."""
        path = self.workdir / f"{next(self._counter):03d}-{name}"
        path.mkdir(parents=True)
        return path

    def mirror(
        self,
        name: str,
        *,
        workers: int = 1,
        redis_url: str | None = None,
        upstream_url: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> MirrorServer:
        """A mirror (not yet started) with a fresh cache directory."""
        directory = self.scratch(name)
        return MirrorServer(
            directory,
            upstream_url=upstream_url or self.upstream.url,
            cache_dir=directory / "cache",
            tag_ttl=self.plan.tag_ttl,
            workers=workers,
            redis_url=redis_url,
            source=self.mirror_source,
            extra_args=extra_args,
        )

    def record_memory(self, phase: str, target: str, peak: MemoryPeak) -> None:
        self.memory.append(MemoryRecord(phase, target, peak))


def describe_problems(
    where: str, problems: LogProblems, *, incomplete_expected: bool = False
) -> list[str]:
    """Printable lines about a mirror log's warnings and errors; nothing when it is clean.

    `incomplete_expected`: wrk closes its connections mid-request when its time is up, so
    under wrk a few responses cut short are the client's doing, not the mirror's.
    """
    if not problems.any(count_incomplete=not incomplete_expected):
        return []
    lines = [
        f"mirror log ({where}): {problems.errors} errors, {problems.warnings} warnings, "
        f"{problems.status_5xx} 5xx answers, {problems.incomplete} incomplete responses"
    ]
    samples = problems.samples[:3]
    if not incomplete_expected:
        samples += problems.incomplete_samples[: 3 - len(samples)]
    lines += [f"    {sample}" for sample in samples]
    return lines
