"""Abuse: junk requests, abandoned downloads and slow readers at once, against one mirror.

What the abuse costs the mirror (memory, descriptors, Redis keys) and the clients that behave
(the latency of a cached manifest and of a stale tag's revalidation), next to the same figures at
rest. The upstream sits behind a slow link, so the abandoned downloads are abandoned mid-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import resource
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.context import Context, describe_problems
from bench.curl import fetch_parallel
from bench.redisinfo import key_count
from bench.report import PhaseReport, table
from bench.rss import KIB, MB, descendants
from bench.servers import MirrorServer
from bench.stats import fmt
from bench.throttle import ThrottledRelay
from bench.upstream import ACCEPT_MANIFESTS, SeededImage
from tests.support.redis_server import RedisServer

MIB = 1024 * 1024
STALE_TAG = "stale"  # configured with a TTL of 0: every request revalidates it


@dataclass(frozen=True)
class Load:
    junk: int
    abandoned: int
    slow_readers: int
    probes: int  # cached-manifest requests per measurement
    stale_probes: int


FULL = Load(junk=1000, abandoned=50, slow_readers=500, probes=300, stale_probes=30)
QUICK = Load(junk=300, abandoned=15, slow_readers=150, probes=100, stale_probes=10)


@dataclass(frozen=True)
class Snapshot:
    rss_mb: float
    descriptors: int
    redis_keys: int


@dataclass(frozen=True)
class Latency:
    cached_p50_ms: float | None
    cached_p99_ms: float | None
    stale_p50_ms: float | None
    stale_max_ms: float | None
    errors: int


def _tree_rss_mb(pid: int) -> float:
    total = 0
    for member in descendants(pid):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total * KIB / MB


def _tree_descriptors(pid: int) -> int:
    count = 0
    for member in descendants(pid):
        with contextlib.suppress(OSError):
            count += len(os.listdir(f"/proc/{member}/fd"))
    return count


def _snapshot(mirror: MirrorServer, redis: RedisServer) -> Snapshot:
    return Snapshot(_tree_rss_mb(mirror.pid), _tree_descriptors(mirror.pid), key_count(redis.port))


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _latency(mirror: MirrorServer, cached: str, stale: str, load: Load) -> Latency:
    """Sequential probes from curl processes of their own (the bench's loop is busy abusing)."""
    run = fetch_parallel(
        [[mirror.url + cached] * load.probes, [mirror.url + stale] * load.stale_probes],
        headers=ACCEPT_MANIFESTS,
        timeout=120,
    )
    cached_run, stale_run = run.clients
    fine = [t.total_s * 1000 for t in cached_run.transfers if t.status == 200]
    revalidated = [t.total_s * 1000 for t in stale_run.transfers if t.status == 200]
    errors = load.probes + load.stale_probes - len(fine) - len(revalidated)
    return Latency(
        _percentile(fine, 0.5),
        _percentile(fine, 0.99),
        statistics.median(revalidated) if revalidated else None,
        max(revalidated) if revalidated else None,
        errors,
    )


class _PeakDescriptors:
    """The most descriptors the mirror held at once, sampled on a thread."""

    def __init__(self, pid: int) -> None:
        self.peak = 0
        self._pid = pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _PeakDescriptors:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, _tree_descriptors(self._pid))


async def _junk(url: str, count: int) -> int:
    """Random repositories, digests and tags: manifests and blobs nobody has. Returns 5xx seen."""
    rng = random.Random(7)
    failures = 0
    gate = asyncio.Semaphore(20)

    async def one(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal failures
        repo = f"junk/r{rng.getrandbits(48):012x}"
        digest = f"sha256:{rng.getrandbits(256):064x}"
        path = (
            f"/v2/{repo}/blobs/{digest}",
            f"/v2/{repo}/manifests/{digest}",
            f"/v2/{repo}/manifests/t{n}",
        )[n % 3]
        async with gate:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url + path, headers=ACCEPT_MANIFESTS) as response:
                    await response.read()
                    failures += response.status >= 500 and response.status != 503

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(one(session, n) for n in range(count)))
    return failures


async def _abandon(url: str, images: list[SeededImage]) -> int:
    """Start each big download, take its first bytes, and leave. Returns how many started."""
    started = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one(image: SeededImage) -> None:
            nonlocal started
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                response = await session.get(url + image.blob_path(image.layer_digest))
                if response.status == 200:
                    await response.content.readexactly(16 * 1024)
                    started += 1
                response.close()

        await asyncio.gather(*(one(image) for image in images))
    return started


async def _slow_readers(port: int, path: str, count: int, hold: float) -> int:
    """Connections that ask for a big cached blob and never read it. Returns how many the
    mirror accepted a request from (a refused connection counts as refused, not as an error)."""
    writers: list[asyncio.StreamWriter] = []
    request = f"GET {path} HTTP/1.1\r\nHost: mirror\r\n\r\n".encode()
    for _ in range(count):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            writers.append(writer)
        except OSError:
            continue
    await asyncio.sleep(hold)
    for writer in writers:
        writer.transport.abort()
    return len(writers)


def run_abuse_phase(ctx: Context) -> PhaseReport:
    report = PhaseReport("abuse", "abuse: junk requests, abandoned downloads, slow readers")
    load = QUICK if ctx.plan.quick else FULL
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # room for the slow readers
    big = ctx.upstream.seed("bench/slowread", "v1", 16 * MIB, seed="slowread")
    stale = ctx.upstream.seed("bench/stale", STALE_TAG, 1024, seed="stale")
    abandoned = [
        ctx.upstream.seed(f"bench/abandon-{n}", "v1", 2 * MIB, seed=f"abandon-{n}")
        for n in range(load.abandoned)
    ]
    redis = RedisServer(ctx.scratch("redis-abuse"))
    redis.start()
    host, port = ctx.upstream.url.removeprefix("http://").split(":")
    relay = ThrottledRelay(host, int(port), rate=512 * 1024)
    config = ctx.scratch("abuse-config") / "mirror.toml"
    try:
        with relay:
            config.write_text(
                f'[upstreams."docker.io"]\nurl = "{relay.url}"\n'
                f'ttl = [{{ tags = "{STALE_TAG}", seconds = 0 }}]\n'
            )
            mirror = ctx.mirror(
                "abuse",
                redis_url=redis.url,
                upstream_url=relay.url,
                extra_args=["--config", str(config)],
            )
            mirror.start()
            try:
                _abuse(ctx, report, mirror, redis, load, big, stale, abandoned)
            finally:
                report.errors += describe_problems(
                    "abuse", mirror.problems(), incomplete_expected=True
                )
                mirror.stop()
    finally:
        redis.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return report


def _abuse(
    ctx: Context,
    report: PhaseReport,
    mirror: MirrorServer,
    redis: RedisServer,
    load: Load,
    big: SeededImage,
    stale: SeededImage,
    abandoned: list[SeededImage],
) -> None:
    started = time.monotonic()
    cached = ctx.small.manifest_path(ctx.small.tag)
    stale_path = stale.manifest_path(STALE_TAG)
    blob_path = big.blob_path(big.layer_digest)
    warm = fetch_parallel(
        [[mirror.url + cached, mirror.url + stale_path, mirror.url + blob_path]],
        headers=ACCEPT_MANIFESTS,
        timeout=120,
    )
    if any(t.status != 200 for t in warm.clients[0].transfers):
        report.errors.append(f"warming failed: {warm.clients[0]}")
        return
    rest = _latency(mirror, cached, stale_path, load)
    before = _snapshot(mirror, redis)

    async def abuse() -> tuple[int, int, int, Latency]:
        probing = asyncio.ensure_future(
            asyncio.to_thread(_latency, mirror, cached, stale_path, load)
        )
        junk, left, slow = await asyncio.gather(
            _junk(mirror.url, load.junk),
            _abandon(mirror.url, abandoned),
            _slow_readers(mirror.port, blob_path, load.slow_readers, hold=20.0),
        )
        return junk, left, slow, await probing

    with _PeakDescriptors(mirror.pid) as peak:
        junk_5xx, left, slow, during = asyncio.run(abuse())
        time.sleep(5)  # abandoned downloads and slow readers are let go of
    after = _snapshot(mirror, redis)
    growth_mb = after.rss_mb - before.rss_mb
    new_keys = after.redis_keys - before.redis_keys
    rows = [
        [
            "cached manifest p50",
            fmt(rest.cached_p50_ms, ".1f", " ms"),
            fmt(during.cached_p50_ms, ".1f", " ms"),
            "",
        ],
        [
            "cached manifest p99",
            fmt(rest.cached_p99_ms, ".1f", " ms"),
            fmt(during.cached_p99_ms, ".1f", " ms"),
            "< 50 ms during",
        ],
        [
            "stale-tag revalidation p50",
            fmt(rest.stale_p50_ms, ".1f", " ms"),
            fmt(during.stale_p50_ms, ".1f", " ms"),
            "",
        ],
        [
            "stale-tag revalidation max",
            fmt(rest.stale_max_ms, ".1f", " ms"),
            fmt(during.stale_max_ms, ".1f", " ms"),
            "< read timeout (30 s)",
        ],
        ["probe errors", str(rest.errors), str(during.errors), "0"],
        [
            "RSS",
            f"{before.rss_mb:.0f} MB",
            f"{after.rss_mb:.0f} MB (+{growth_mb:.1f})",
            "growth < 30 MiB",
        ],
        [
            "open descriptors",
            str(before.descriptors),
            f"{after.descriptors} after, {peak.peak} peak",
            "bounded by the cap",
        ],
        [
            "Redis keys",
            str(before.redis_keys),
            f"{after.redis_keys} ({new_keys:+d})",
            "no new key per junk request",
        ],
    ]
    report.lines += table(["figure", "at rest", "under abuse", "target"], rows)
    report.lines.append(
        f"abuse: {load.junk} junk requests ({junk_5xx} answered 5xx other than 503), "
        f"{left}/{len(abandoned)} downloads abandoned after their first bytes, "
        f"{slow}/{load.slow_readers} slow readers connected"
    )
    report.data.update(
        load=load,
        at_rest=rest,
        under_abuse=during,
        before=before,
        after=after,
        peak_descriptors=peak.peak,
        junk_5xx=junk_5xx,
        abandoned_started=left,
        slow_readers_connected=slow,
    )
    report.seconds = time.monotonic() - started
