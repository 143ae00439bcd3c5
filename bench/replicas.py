"""Replicas: three mirrors with caches of their own sharing one Redis (`--peer-url`), pulling one
cold image. What the upstream sends per image, and how long a cold pull through the replicas
takes against the same pull straight from the upstream; then hits from a shared bucket against
hits from the local disk (bucket_hits.py)."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass

from bench.bucket_hits import measure_bucket_hits
from bench.context import Context, describe_problems
from bench.curl import fetch_parallel
from bench.plan import MIB
from bench.report import PhaseReport, table
from bench.servers import MirrorServer
from bench.stats import fmt, median, ratio
from bench.upstream import ACCEPT_MANIFESTS, SeededImage
from tests.support.redis_server import RedisServer

REPLICAS = 3
SECRET = "bench-replicas-shared-secret"
GOAL = "upstream bytes 1.00"
# (replicas, clients spread over them): one replica alone is the cost of a cold pull by itself.
SPREADS = ((1, 1), (REPLICAS, REPLICAS), (REPLICAS, 30))


@dataclass(frozen=True)
class ReplicaRun:
    replicas: int  # 0: one client, straight from the upstream
    clients: int  # spread evenly over the replicas
    run: int
    wall_s: float
    upstream_layer_gets: int
    upstream_manifest_gets: int
    upstream_bytes_ratio: float  # every byte the upstream sent, ÷ the image's size
    failures: list[str]
    log_problems: list[str]


def _image_urls(base: str, image: SeededImage) -> list[str]:
    return [
        base + image.manifest_path(image.tag),
        base + image.blob_path(image.config_digest),
        base + image.blob_path(image.layer_digest),
    ]


def _failures(result_clients: list[list[tuple[int, int]]], image: SeededImage) -> list[str]:
    want = [(200, image.manifest_size), (200, image.config_size), (200, image.layer_size)]
    return [f"client {n}: got {got}" for n, got in enumerate(result_clients) if got != want]


@contextlib.contextmanager
def _replicas(
    ctx: Context, redis: RedisServer, count: int, prefix: str
) -> Iterator[list[MirrorServer]]:
    """Fresh replicas (empty caches, a Redis prefix of their own), stopped afterwards."""
    config = ctx.scratch(f"replicas-config-{prefix}") / "mirror.toml"
    config.write_text(f'redis_prefix = "bench-{prefix}:"\npeer_secret = "{SECRET}"\n')
    replicas: list[MirrorServer] = []
    try:
        for number in range(count):
            replica = ctx.mirror(
                f"replica-{prefix}-{number}",
                redis_url=redis.url,
                extra_args=["--config", str(config)],
            )
            replica.argv += ["--peer-url", replica.url]  # its own address, known once made
            replicas.append(replica)
            replica.start()
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()
            shutil.rmtree(replica.cache_dir, ignore_errors=True)


def _run(
    ctx: Context, redis: RedisServer, image: SeededImage, spread: tuple[int, int], run: int
) -> ReplicaRun:
    count, clients = spread
    with _replicas(ctx, redis, count, f"{run}-{count}-{clients}") as replicas:
        mark = ctx.upstream.mark()
        urls = [_image_urls(replicas[n % count].url, image) for n in range(clients)]
        result = fetch_parallel(urls, headers=ACCEPT_MANIFESTS, timeout=ctx.plan.transfer_timeout)
        traffic = ctx.upstream.since(mark)
        gets = [path for method, path in ctx.upstream.registry.requests() if method == "GET"]
        layer_gets = gets.count(image.blob_path(image.layer_digest))
        manifest_gets = sum(1 for path in gets if "/manifests/" in path)
        problems = [
            line
            for number, replica in enumerate(replicas)
            for line in describe_problems(f"replica {number} run {run}", replica.problems())
        ]
    got = [[(t.status, t.bytes) for t in client.transfers] for client in result.clients]
    return ReplicaRun(
        replicas=count,
        clients=clients,
        run=run,
        wall_s=result.wall_s,
        upstream_layer_gets=layer_gets,
        upstream_manifest_gets=manifest_gets,
        upstream_bytes_ratio=traffic.get_bytes / image.size,
        failures=_failures(got, image),
        log_problems=problems,
    )


def _direct(ctx: Context, image: SeededImage, run: int) -> ReplicaRun:
    result = fetch_parallel(
        [_image_urls(ctx.upstream.url, image)],
        headers=ACCEPT_MANIFESTS,
        timeout=ctx.plan.transfer_timeout,
    )
    got = [[(t.status, t.bytes) for t in client.transfers] for client in result.clients]
    return ReplicaRun(0, 1, run, result.wall_s, 1, 1, 1.0, _failures(got, image), [])


def run_replicas_phase(ctx: Context) -> PhaseReport:
    started = time.monotonic()
    image = ctx.big()
    report = PhaseReport(
        "replicas",
        f"replicas: {REPLICAS} mirrors, separate caches, one Redis; one cold image "
        f"({image.layer_size / MIB:.0f} MiB layer), clients spread over them",
    )
    runs: list[ReplicaRun] = []
    redis = RedisServer(ctx.scratch("redis-replicas"))
    redis.start()
    try:
        for run in range(ctx.plan.runs):
            runs.append(_direct(ctx, image, run))
            for spread in SPREADS:
                try:
                    runs.append(_run(ctx, redis, image, spread, run))
                except Exception as e:
                    report.errors.append(f"{spread} run {run}: {type(e).__name__}: {e}")
    finally:
        redis.stop()
    direct = median([r.wall_s for r in runs if not r.replicas and not r.failures])
    rows = [["direct, 1 client", fmt(direct, ".3f"), "1.00x", "-", "-", "-", "(base)"]]
    for count, clients in SPREADS:
        name = f"{count} replicas, {clients} clients" if count > 1 else "1 replica, 1 client"
        ours = [r for r in runs if (r.replicas, r.clients) == (count, clients)]
        wall = median([r.wall_s for r in ours if not r.failures])
        rows.append(
            [
                name,
                fmt(wall, ".3f"),
                fmt(ratio(wall, direct), ".2f", "x"),
                " ".join(f"{r.upstream_bytes_ratio:.2f}" for r in ours) or "-",
                " ".join(str(r.upstream_layer_gets) for r in ours) or "-",
                " ".join(str(r.upstream_manifest_gets) for r in ours) or "-",
                GOAL,
            ]
        )
        report.data.setdefault("summary", {})[name] = {
            "wall_s": wall,
            "vs_direct": ratio(wall, direct),
        }
        for r in ours:
            report.errors += [f"{name} run {r.run}: {f}" for f in r.failures[:4]]
            report.errors += r.log_problems
    headers = ["pull", "wall s", "xdirect", "upstream xsize", "layer GETs", "manifest GETs"]
    report.lines += table([*headers, "target"], rows)
    report.lines.append(
        "upstream xsize: all the upstream sent ÷ the image's size (its manifest included); "
        "GETs: upstream requests per run, 1 each when the replicas act as one cache"
    )
    report.data["runs"] = runs
    measure_bucket_hits(ctx, report)
    report.seconds = time.monotonic() - started
    return report
