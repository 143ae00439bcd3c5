"""Eviction: cached-manifest hits while the mirror evicts, against hits at rest.

One mirror with a small cap serves a pinned manifest under wrk. At rest nothing else happens.
Then thousands of unpinned images are written into its cache directory and the shared usage
counter raised by their size, as another replica storing them would; the mirror's evictor sees
the cache past its cap within a second, walks it, and wrk runs again as soon as the pass starts
removing images. A run counts only if the pass was still at work when wrk ended (the mirror's
own log says when it ends); the table also says how many images the pass removed while wrk ran
and how long it took in all. Its helper process runs at a lower priority, so on a machine wrk
and the mirror saturate, the pass mostly waits for them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from bench.context import Context, describe_problems
from bench.report import PhaseReport, table
from bench.servers import MirrorServer
from bench.stats import fmt, median, ratio
from bench.upstream import ACCEPT_MANIFESTS
from bench.wrk import WrkResult, run_wrk
from mirror.cache.usage import UsageCounter
from mirror.oci.digest import Digest
from mirror.storage.layout import CacheLayout

GOAL = "≥0.90x at rest"
CAP = "4MiB"
LAYER_BYTES = 2048
# An eviction pass handles about 1,500 images a second on one core; write enough for it to
# outlast the wrk window under load.
IMAGES_PER_SECOND = 2500


@dataclass(frozen=True)
class EvictRun:
    run: int
    rest: WrkResult | None
    during: WrkResult | None
    images: int
    covered: bool  # the pass was still running when wrk ended
    evicted_during: int = 0  # images the pass removed while wrk ran
    pass_seconds: float | None = None  # from the mirror's "evicting" line to its "evicted"
    error: str | None = None


def write_images(cache_dir: Path, count: int, run: int) -> int:
    """`count` distinct small images with tags, written straight into the cache's layout (as a
    replica's commits leave them); returns their bytes."""
    layout = CacheLayout(cache_dir)
    total = 0
    for n in range(count):
        layer = os.urandom(LAYER_BYTES)
        config = json.dumps({"run": run, "image": n}).encode()
        blobs = [(Digest.of(data), data) for data in (config, layer)]
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"digest": str(blobs[0][0]), "size": len(config)},
                "layers": [{"digest": str(blobs[1][0]), "size": len(layer)}],
            }
        ).encode()
        digest = Digest.of(manifest)
        sidecar = b'{"mediaType": "application/vnd.oci.image.manifest.v1+json"}'
        files = [(layout.blob(d), data) for d, data in blobs]
        files += [(layout.manifest(digest), manifest)]
        files += [(layout.manifest(digest).with_name(digest.hex + ".json"), sidecar)]
        tag = {"digest": str(digest), "media_type": "x", "fetched_at": time.time()}
        files += [
            (layout.tag("docker.io", f"junk/r{n % 100}", f"{run}-{n}"), json.dumps(tag).encode())
        ]
        for path, data in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            total += len(data)
    return total


def _written_left(cache_dir: Path) -> int:
    """How many of the written images still have their tag."""
    root = cache_dir / "tags" / "docker.io" / "junk"
    return sum(len(os.listdir(r / "_tags")) for r in root.iterdir() if (r / "_tags").is_dir())


def _log_events(mirror: MirrorServer, offset: int) -> tuple[list[str], int]:
    """The "evicting" and "evicted" lines written since `offset`, and the new offset."""
    with mirror.log_path.open("rb") as f:
        f.seek(offset)
        text = f.read()
    found = []
    for line in text.decode(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") in ("evicting", "evicted"):
            found.append(str(record["event"]))
    return found, offset + len(text)


def _wait_for(mirror: MirrorServer, event: str, offset: int, within: float) -> tuple[bool, int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        events, offset = _log_events(mirror, offset)
        if event in events:
            return True, offset
        time.sleep(0.02)
    return False, offset


def run_evict_phase(ctx: Context) -> PhaseReport:
    started = time.monotonic()
    seconds = min(ctx.plan.wrk_seconds, 5)
    report = PhaseReport(
        "evict",
        f"manifest hits while the mirror evicts: wrk {ctx.plan.wrk_connections} connections, "
        f"{seconds} s, cap {CAP}",
    )
    workdir = ctx.scratch("evict")
    config = workdir / "mirror.toml"
    config.write_text(f'pin = ["docker.io/{ctx.small.repo}:*"]\n')
    mirror = MirrorServer(
        workdir,
        upstream_url=ctx.upstream.url,
        cache_dir=workdir / "cache",
        tag_ttl=ctx.plan.tag_ttl,
        source=ctx.mirror_source,
        extra_args=["--max-size", CAP, "--protect-window", "0", "--config", str(config)],
    )
    url = mirror.url + ctx.small.manifest_path(ctx.small.tag)
    runs: list[EvictRun] = []
    mirror.start()
    try:
        run_wrk(
            url,
            seconds=1,
            connections=ctx.plan.wrk_connections,
            threads=2,
            headers=ACCEPT_MANIFESTS,
        )
        for run in range(ctx.plan.runs):
            runs.append(_measure(ctx, mirror, url, seconds, run))
    finally:
        mirror.stop()
    problems = mirror.problems()
    report.errors += describe_problems("evict", problems, incomplete_expected=True)
    report.errors += [f"run {r.run}: {r.error}" for r in runs if r.error]
    rest = median([r.rest.requests_per_s for r in runs if r.rest])
    during = median([r.during.requests_per_s for r in runs if r.during and r.covered])
    failures = sum(w.non_2xx + w.socket_errors for r in runs for w in (r.rest, r.during) if w)
    report.lines = table(
        ["hits", "req/s", "p99 ms", "evicted during wrk", "pass took", "non-2xx+err", "target"],
        [
            ["at rest", fmt(rest), fmt(median([r.rest.p99_ms for r in runs if r.rest]), ".2f"),
             "-", "-", str(failures), "-"],
            ["while evicting", fmt(during),
             fmt(median([r.during.p99_ms for r in runs if r.during and r.covered]), ".2f"),
             "/".join(f"{r.evicted_during} of {r.images}" for r in runs),
             fmt(median([r.pass_seconds for r in runs if r.pass_seconds]), ".0f", " s"), "", ""],
            ["ratio", fmt(ratio(during, rest), ".3f", "x"), "", "", "", "", GOAL],
        ],
    )  # fmt: skip
    report.data.update(
        {"runs": runs, "rest_rps": rest, "during_rps": during, "ratio": ratio(during, rest)}
    )
    report.seconds = time.monotonic() - started
    return report


def _measure(ctx: Context, mirror: MirrorServer, url: str, seconds: int, run: int) -> EvictRun:
    plan = ctx.plan
    images = IMAGES_PER_SECOND * (seconds + 2)
    try:
        rest = run_wrk(url, seconds=seconds, connections=plan.wrk_connections,
                       threads=plan.wrk_threads, headers=ACCEPT_MANIFESTS)  # fmt: skip
        offset = mirror.log_path.stat().st_size
        written = write_images(mirror.cache_dir, images, run)
        os.sync()  # their write-back is the writer's cost, not eviction's: over before wrk
        UsageCounter(mirror.cache_dir / "usage").add(written)
        started, offset = _wait_for(mirror, "evicting", offset, within=10)
        began = time.monotonic()
        if not started:
            return EvictRun(
                run, rest, None, images, False, error="the mirror did not start evicting"
            )
        # The pass walks the cache first; wrk runs once it removes images.
        while (before := _written_left(mirror.cache_dir)) == images:
            if time.monotonic() - began > 300:
                return EvictRun(run, rest, None, images, False, error="the pass removed nothing")
            time.sleep(0.05)
        during = run_wrk(url, seconds=seconds, connections=plan.wrk_connections,
                         threads=plan.wrk_threads, headers=ACCEPT_MANIFESTS)  # fmt: skip
        evicted = before - _written_left(mirror.cache_dir)
        events, offset = _log_events(mirror, offset)
        covered = "evicted" not in events
        finished, _ = _wait_for(mirror, "evicted", offset, within=600) if covered else (True, 0)
        took = time.monotonic() - began
        error = None if covered else "the pass ended before wrk did; write more images"
        if not finished:
            error = "the eviction pass did not end"
        return EvictRun(run, rest, during, images, covered, evicted, took, error)
    except Exception as e:
        return EvictRun(run, None, None, images, False, error=f"{type(e).__name__}: {e}")
