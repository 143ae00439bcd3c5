"""Hits from the bucket against hits from the local disk: one cached blob read by parallel curl
clients from a mirror whose cache directory holds it (sendfile), from a mirror on the same
bucket whose cache directory is empty (streamed from the bucket, each whole body checked against
its digest), and from one with `redirect = true` (curl follows the 307 to a pre-signed URL).

The bucket is SeaweedFS on loopback, started as the tests start it. Each client makes one GET,
all at once: the first read of a mirror with an empty directory starts a copy to its local disk,
and a request that arrived after that copy landed would go out by sendfile. Every request of a
streamed burst is checked to have reached the mirror before the copy was written.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.context import Context, describe_problems
from bench.curl import ParallelRun, fetch_parallel
from bench.plan import MIB
from bench.report import PhaseReport, table
from bench.servers import MirrorServer
from bench.stats import fmt, median, ratio
from bench.upstream import SeededImage
from bench.warm_blob import cached_path, failures_of, wait_cached
from tests.support.seaweed import BUCKET, Seaweed

LOCAL = "local disk (sendfile)"
STREAMED = "bucket, streamed"
REDIRECTED = "bucket, 307 to it"
PREFIX = "bench-hits"
UPLOAD_WAIT = 120.0


@dataclass(frozen=True)
class HitRun:
    source: str
    run: int
    wall_s: float
    mb_per_s: float | None  # None when any transfer failed
    median_ttfb_ms: float | None
    failures: list[str]


def _config(ctx: Context, seaweed: Seaweed, *, redirect: bool) -> Path:
    """A settings file for mirrors on the bench's prefix of the bucket."""
    s3 = seaweed.settings(PREFIX)
    path = ctx.scratch("bucket-config" + ("-redirect" if redirect else "")) / "mirror.toml"
    path.write_text(
        "[storage]\n"
        f'url = "{s3.url}"\n'
        f'endpoint = "{s3.endpoint}"\n'
        f'access_key_id = "{s3.access_key_id}"\n'
        f'secret_access_key = "{s3.secret_access_key}"\n'
        f"redirect = {'true' if redirect else 'false'}\n"
    )
    return path


def _wait_uploaded(seaweed: Seaweed, image: SeededImage) -> None:
    """Blobs reach the bucket after the local commit, in the background."""
    key = "blobs/" + image.layer_digest.replace(":", "/")
    deadline = time.monotonic() + UPLOAD_WAIT
    while time.monotonic() < deadline:
        if seaweed.keys(PREFIX).get(key) == image.layer_size:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the blob was not in s3://{BUCKET}/{PREFIX} {UPLOAD_WAIT:.0f}s after")


def _burst(
    ctx: Context, source: str, url: str, image: SeededImage, run: int, *, follow: bool = False
) -> tuple[HitRun, ParallelRun, float]:
    """Every client's one GET at once; the run, curl's own figures, and when it ended."""
    clients = ctx.plan.warm_clients
    result = fetch_parallel(
        [[url]] * clients, timeout=ctx.plan.transfer_timeout, follow_redirects=follow
    )
    ended_at = time.time()
    failures = failures_of(result, image.layer_size, 1)
    if follow:
        failures += [
            f"client {number}: followed {t.redirects} redirects, not 1"
            for number, client in enumerate(result.clients)
            for t in client.transfers
            if t.redirects != 1
        ]
    rate = None if failures else image.layer_size * clients / result.wall_s / 1e6
    ttfb = median([t.ttfb_s * 1000 for c in result.clients for t in c.transfers])
    return HitRun(source, run, result.wall_s, rate, ttfb, failures), result, ended_at


def _sent_from_disk(path: Path, result: ParallelRun, ended_at: float) -> list[str]:
    """Requests that may have reached the mirror after its copy of the blob was written (and
    so gone out from disk): the copy's last write must come after every client's first byte.

    A transfer ended by `ended_at`, so its first byte came by `ended_at - total + ttfb`, and its
    request before that; the copy is committed after its last write (the file's mtime)."""
    try:
        written = path.stat().st_mtime
    except FileNotFoundError:
        return []  # not copied yet: every request was streamed
    late = sorted(
        {
            number
            for number, client in enumerate(result.clients)
            for t in client.transfers
            if ended_at - t.total_s + t.ttfb_s >= written
        }
    )
    if not late:
        return []
    return [f"clients {late} may have been sent the local copy: the figure mixes both"]


def _streamed_run(
    ctx: Context, config: Path, image: SeededImage, run: int, report: PhaseReport
) -> HitRun:
    """A burst on a fresh mirror with an empty cache directory, stopped afterwards."""
    mirror = ctx.mirror(f"bucket-empty-{run}", extra_args=["--config", str(config)])
    mirror.start()
    try:
        hits, result, ended_at = _burst(
            ctx, STREAMED, mirror.url + image.blob_path(image.layer_digest), image, run
        )
        copy = cached_path(mirror.cache_dir, image.layer_digest)
        hits.failures.extend(_sent_from_disk(copy, result, ended_at))
    finally:
        mirror.stop()
    report.errors += describe_problems(f"{STREAMED}, run {run}", mirror.problems())
    shutil.rmtree(mirror.cache_dir, ignore_errors=True)
    return hits


def _start(ctx: Context, name: str, config: Path, stops: list[Callable[[], None]]) -> MirrorServer:
    mirror = ctx.mirror(name, extra_args=["--config", str(config)])
    mirror.start()
    stops.append(mirror.stop)
    return mirror


def _runs(ctx: Context, seaweed: Seaweed, image: SeededImage, report: PhaseReport) -> list[HitRun]:
    path = image.blob_path(image.layer_digest)
    config = _config(ctx, seaweed, redirect=False)
    stops: list[Callable[[], None]] = []
    mirrors: dict[str, MirrorServer] = {}
    runs: list[HitRun] = []
    try:
        local = mirrors[LOCAL] = _start(ctx, "bucket-local", config, stops)
        fill = fetch_parallel([[local.url + path]], timeout=ctx.plan.transfer_timeout)
        if failures := failures_of(fill, image.layer_size, 1):
            raise RuntimeError(f"filling the cache failed: {failures}")
        wait_cached(cached_path(local.cache_dir, image.layer_digest), image.layer_size)
        _wait_uploaded(seaweed, image)
        redirected = mirrors[REDIRECTED] = _start(
            ctx, "bucket-redirect", _config(ctx, seaweed, redirect=True), stops
        )
        ctx.upstream.settle()
        mark = ctx.upstream.mark()
        for run in range(ctx.plan.runs):
            runs.append(_burst(ctx, LOCAL, local.url + path, image, run)[0])
            runs.append(_streamed_run(ctx, config, image, run, report))
            runs.append(_burst(ctx, REDIRECTED, redirected.url + path, image, run, follow=True)[0])
        if asked := ctx.upstream.since(mark).requests:
            report.errors.append(f"hits from the bucket or the disk asked the upstream {asked}x")
    finally:
        for stop in stops:
            stop()
    for name, mirror in mirrors.items():
        report.errors += describe_problems(name, mirror.problems())
    return runs


def measure_bucket_hits(ctx: Context, report: PhaseReport) -> None:
    """Add the table of hit throughput by source to `report`."""
    image = ctx.big()
    seaweed = Seaweed(ctx.scratch("seaweed"))
    runs: list[HitRun] = []
    try:
        seaweed.start()
        runs = _runs(ctx, seaweed, image, report)
    except Exception as e:
        report.errors.append(f"hits from the bucket: {type(e).__name__}: {e}")
    finally:
        seaweed.stop()
    local = median([r.mb_per_s for r in runs if r.source == LOCAL and r.mb_per_s])
    rows = []
    for source in (LOCAL, STREAMED, REDIRECTED):
        ours = [r for r in runs if r.source == source]
        rate = median([r.mb_per_s for r in ours if r.mb_per_s])
        ttfb = median([r.median_ttfb_ms for r in ours if r.median_ttfb_ms is not None])
        rows.append(
            [
                source,
                fmt(rate),
                " ".join(fmt(r.mb_per_s) for r in ours),
                "(base)" if source == LOCAL else fmt(ratio(rate, local), ".2f", "x"),
                fmt(ttfb, ".1f"),
            ]
        )
        report.data.setdefault("bucket_hits", {})[source] = {
            "mb_per_s": rate,
            "vs_local_disk": ratio(rate, local),
        }
        report.errors += [f"{source} run {r.run}: {f}" for r in ours for f in r.failures[:4]]
    report.lines += [
        "",
        f"hits: {ctx.plan.warm_clients} curl clients at once, one full GET each of the cached "
        f"{image.layer_size / MIB:.0f} MiB blob, from a mirror on a SeaweedFS bucket (loopback)",
        *table(["hits from", "MB/s", "runs MB/s", "xlocal disk", "TTFB ms"], rows),
        f"{STREAMED}: a fresh mirror, empty cache directory; every request reached it before "
        "the copy to its disk (started by the first) was written; that copy ran beside them",
        f"{REDIRECTED}: redirect = true; curl follows the 307 to a pre-signed URL of the store",
    ]
    report.data["bucket_hit_runs"] = runs
