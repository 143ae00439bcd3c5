"""Cold pulls: N clients at once on one uncached blob (fresh cache each time), then the cold pulls
of every server in the line-up (bench/pull.py)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass

from bench.context import Context, describe_problems
from bench.curl import fetch_parallel
from bench.plan import MIB
from bench.pull import run_pulls
from bench.report import PhaseReport, table
from bench.rss import MemoryPeak, RssSampler
from bench.stats import fmt, median, ratio
from bench.throttle import ThrottledRelay
from bench.upstream import SeededImage
from bench.warm_blob import cached_path, failures_of, wait_cached

GOAL_BYTES = "1.00"
GOAL_WALL = "≤1.2 at N=50"
GOAL_RSS = "≤100 MiB per process, flat from 1 to 50 clients"


@dataclass(frozen=True)
class Variant:
    clients: int
    workers: int
    link: float | None = None  # upstream link speed in bytes/s; None: loopback, unpaced

    @property
    def name(self) -> str:
        return f"N={self.clients} w{self.workers}{self._link}"

    @property
    def server(self) -> str:
        """The line-up's name of the server, and what it served."""
        return f"mirror embedded w{self.workers} ({self.clients} clients{self._link})"

    @property
    def _link(self) -> str:
        return f" @{self.link / MIB:.0f}MiB/s" if self.link else ""


@dataclass(frozen=True)
class ColdRun:
    variant: str
    run: int
    wall_s: float
    ttfb_median_ms: float | None
    ttfb_max_ms: float | None
    upstream_gets: int
    upstream_bytes_ratio: float
    peak: MemoryPeak
    committed: bool
    failures: list[str]  # clients that did not get the whole blob
    log_problems: list[str]


def _variants(ctx: Context) -> list[Variant]:
    variants = [Variant(n, 1) for n in ctx.plan.cold_clients]
    # Several processes on one cache dir must still share one fill.
    variants.append(Variant(max(ctx.plan.cold_clients), 2))
    # Behind a link slower than the mirror, the fill is what everyone waits for.
    variants += [Variant(n, 1, ctx.plan.slow_link) for n in (1, max(ctx.plan.cold_clients))]
    return variants


def _cold_run(ctx: Context, image: SeededImage, variant: Variant, run: int) -> ColdRun:
    if variant.link is None:
        return _cold_run_via(ctx, image, variant, run, None)
    host, _, port = ctx.upstream.url.removeprefix("http://").partition(":")
    with ThrottledRelay(host, int(port), variant.link) as relay:
        return _cold_run_via(ctx, image, variant, run, relay.url)


def _cold_run_via(
    ctx: Context, image: SeededImage, variant: Variant, run: int, upstream_url: str | None
) -> ColdRun:
    mirror = ctx.mirror(
        f"cold-{variant.clients}-w{variant.workers}",
        workers=variant.workers,
        upstream_url=upstream_url,
    )
    mirror.start()
    try:
        url = mirror.url + image.blob_path(image.layer_digest)
        mark = ctx.upstream.mark()
        with RssSampler(mirror.pid) as sampler:
            result = fetch_parallel([[url]] * variant.clients, timeout=ctx.plan.transfer_timeout)
            path = cached_path(mirror.cache_dir, image.layer_digest)
            try:
                wait_cached(path, image.layer_size, timeout=30)
                committed = True
            except RuntimeError:
                committed = False
            peak = sampler.stop()
        traffic = ctx.upstream.since(mark)
    finally:
        mirror.stop()
        # Fresh caches of a big blob add up over the runs; the logs are all we keep.
        shutil.rmtree(mirror.cache_dir, ignore_errors=True)
    ttfbs = [t.ttfb_s * 1000 for c in result.clients for t in c.transfers]
    return ColdRun(
        variant=variant.name,
        run=run,
        wall_s=result.wall_s,
        ttfb_median_ms=median(ttfbs),
        ttfb_max_ms=max(ttfbs) if ttfbs else None,
        upstream_gets=traffic.gets,
        upstream_bytes_ratio=traffic.get_bytes / image.layer_size,
        peak=peak,
        committed=committed,
        failures=failures_of(result, image.layer_size, 1),
        log_problems=describe_problems(f"cold {variant.name} run {run}", mirror.problems()),
    )


def run_cold_phase(ctx: Context) -> PhaseReport:
    started = time.monotonic()
    image = ctx.big()
    report = PhaseReport(
        "cold",
        f"cold: one uncached {image.layer_size / MIB:.0f} MiB blob, N concurrent curl clients, "
        "fresh cache dir per run",
    )
    runs: list[ColdRun] = []
    for run in range(ctx.plan.runs):
        for variant in _variants(ctx):
            try:
                cold = _cold_run(ctx, image, variant, run)
            except Exception as e:
                report.errors.append(f"{variant.name} run {run}: {type(e).__name__}: {e}")
                continue
            runs.append(cold)
            ctx.record_memory("cold", variant.server, cold.peak)
    _summarize_blob(report, runs, _variants(ctx))
    report.data["runs"] = runs
    run_pulls(ctx, report)
    report.seconds = time.monotonic() - started
    return report


def _summarize_blob(report: PhaseReport, runs: list[ColdRun], variants: list[Variant]) -> None:
    rows = []
    summary = {}
    for variant in variants:
        # Relative to one client over the same kind of upstream link.
        base = next(v for v in variants if v.clients == 1 and v.link == variant.link)
        single = median([r.wall_s for r in runs if r.variant == base.name and not r.failures])
        ours = [r for r in runs if r.variant == variant.name]
        wall = median([r.wall_s for r in ours])
        rows.append(
            [
                variant.name,
                fmt(wall, ".2f"),
                fmt(ratio(wall, single), ".2f", "x"),
                fmt(median([r.ttfb_median_ms for r in ours if r.ttfb_median_ms]), ".1f"),
                fmt(median([r.ttfb_max_ms for r in ours if r.ttfb_max_ms]), ".1f"),
                " ".join(f"{r.upstream_bytes_ratio:.2f}" for r in ours) or "-",
                " ".join(str(r.upstream_gets) for r in ours) or "-",
                fmt(max((r.peak.total_rss_mb for r in ours), default=None), ".1f"),
                f"{sum(1 for r in ours if r.failures)}/{len(ours)}",
                f"bytes {GOAL_BYTES}; " + (GOAL_WALL if variant.clients > 1 else "(base)"),
            ]
        )
        summary[variant.name] = {"wall_s": wall, "wall_vs_single": ratio(wall, single)}
        for r in ours:
            if not r.committed:
                report.errors.append(f"{variant.name} run {r.run}: blob not committed to cache")
            report.errors += [f"{variant.name} run {r.run}: {f}" for f in r.failures[:4]]
            report.errors += r.log_problems
    headers = ["clients", "wall s", "xN=1", "TTFB med ms", "TTFB max ms", "upstream xsize"]
    headers += ["upstream GETs", "peak RSS MB", "failed", "target"]
    report.lines += table(headers, rows)
    report.lines.append(f"peak RSS target: {GOAL_RSS}")
    report.data["summary"] = summary
