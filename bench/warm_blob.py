"""Warm blob: parallel full GETs of a cached blob through each server of the line-up and from
nginx serving the file itself (sendfile), the practical limit.

The static nginx serves the mirror's own cache directory, so it sends the very file the mirror
sends, from the page cache; the ratio shows what a server's hit path costs above the kernel's.
With its metrics on (the default), the mirror must still send the blob with sendfile (strace
counts the bytes its sendfile calls carry) and count every byte the clients received as served
from the cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.context import Context, describe_problems
from bench.curl import ParallelRun, fetch_parallel
from bench.lineup import EMBEDDED_W1, LINEUP, Running, start
from bench.nginx import NginxServer
from bench.plan import MIB
from bench.report import PhaseReport, table
from bench.rss import RssSampler, descendants
from bench.sendfile import sendfile_bytes
from bench.servers import MirrorServer
from bench.stats import fmt, median, ratio
from bench.upstream import SeededImage
from mirror.metrics.exposition import PUBLISH_INTERVAL
from tests.support.processes import direct

GOAL = "≥0.95x nginx sendfile"
NGINX = "nginx sendfile"


@dataclass(frozen=True)
class BlobRun:
    target: str
    run: int
    wall_s: float
    mb_per_s: float | None  # None when any transfer failed
    median_ttfb_ms: float | None
    upstream_requests: int
    failures: list[str]
    received: int  # body bytes, every client's transfers together


def cached_path(cache_dir: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":", 1)
    return cache_dir / "blobs" / algorithm / hexdigest[:2] / hexdigest


def wait_cached(path: Path, size: int, timeout: float = 60.0) -> None:
    """The fill commits after the last byte is sent; wait for the file to be in place."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.stat().st_size == size:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{path} was not committed within {timeout:.0f}s of the pull")


def failures_of(run: ParallelRun, size: int, expected_transfers: int) -> list[str]:
    """Every client that did not receive each body whole with 200."""
    found = []
    for number, client in enumerate(run.clients):
        good = [t for t in client.transfers if t.status == 200 and t.bytes == size]
        if client.exit_code != 0 or len(good) != expected_transfers:
            seen = [(t.status, t.bytes) for t in client.transfers]
            found.append(f"client {number}: curl exit {client.exit_code}, {seen} {client.error}")
    return found


def _repeats(ctx: Context, image: SeededImage) -> int:
    """Each client repeats its GET until it has read about this much, so one run lasts long
    enough for process and connection set-up not to weigh on the figure."""
    return max(1, round(ctx.plan.warm_bytes_per_client / image.layer_size))


def _one_run(name: str, url: str, run: int, ctx: Context, image: SeededImage) -> BlobRun:
    repeats = _repeats(ctx, image)
    clients = [[url] * repeats for _ in range(ctx.plan.warm_clients)]
    ctx.upstream.settle()  # what the fills before asked upstream is not this run's
    mark = ctx.upstream.mark()
    result = fetch_parallel(clients, timeout=ctx.plan.transfer_timeout)
    upstream = ctx.upstream.since(mark).requests
    failures = failures_of(result, image.layer_size, repeats)
    total = image.layer_size * repeats * ctx.plan.warm_clients
    ttfb = median([t.ttfb_s * 1000 for c in result.clients for t in c.transfers])
    rate = None if failures else total / result.wall_s / 1e6
    received = sum(t.bytes for c in result.clients for t in c.transfers)
    return BlobRun(name, run, result.wall_s, rate, ttfb, upstream, failures, received)


def served_from_cache(mirror: MirrorServer) -> float:
    """What the mirror's /metrics counts as sent from its cache (every worker's)."""
    with direct.open(f"{mirror.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mirror_served_bytes_total" and sample.labels.get("cache") == "hit"
    )


def sendfile_check(ctx: Context, name: str, mirror: MirrorServer, url: str) -> tuple[str, float]:
    """Two GETs of the blob with strace on the mirror's serving processes: a line saying the
    share of their bytes that sendfile carried, and that share."""
    pids = descendants(mirror.pid)
    pids = pids[1:] or pids  # the workers, when a supervisor forked them
    trace = ctx.scratch(f"strace-{name.replace(' ', '-')}") / "sendfile.trace"
    result: list[ParallelRun] = []
    carried = sendfile_bytes(
        pids, trace, lambda: result.append(fetch_parallel([[url, url]], timeout=120.0))
    )
    received = sum(t.bytes for c in result[0].clients for t in c.transfers)
    share = carried / received if received else 0.0
    line = (
        f"{name}: sendfile carried {share:.1%} of the {received / MIB:.0f} MiB of two GETs "
        "(strace), target 100%"
    )
    return line, share


def _check_mirrors(
    ctx: Context,
    report: PhaseReport,
    runs: list[BlobRun],
    mirrors: dict[str, tuple[MirrorServer, str, float]],
) -> list[str]:
    """For each mirror (server, blob URL, bytes /metrics counted before the runs): what its
    /metrics counted against what its clients received, and sendfile's share of a hit."""
    time.sleep(2 * PUBLISH_INTERVAL)  # each worker adds its counts once a second
    checks = []
    for name, (mirror, url, before) in mirrors.items():
        counted = served_from_cache(mirror) - before
        received = sum(r.received for r in runs if r.target == name)
        checks.append(
            f"{name}: /metrics counted {counted / MIB:.0f} MiB served from the cache, "
            f"the clients received {received / MIB:.0f} MiB"
        )
        if counted != received:
            report.errors.append(f"{name}: served bytes counted {counted}, sent {received}")
        line, share = sendfile_check(ctx, name, mirror, url)
        checks.append(line)
        report.data.setdefault("sendfile", {})[name] = share
        if share < 0.99:
            report.errors.append(f"{name}: blob hits are not sent with sendfile ({line})")
    return checks


def _fill(ctx: Context, running: Running, image: SeededImage) -> None:
    """One GET through the server, and what it takes for the blob to be a hit afterwards."""
    url = running.url + image.blob_path(image.layer_digest)
    fill = fetch_parallel([[url]], timeout=ctx.plan.transfer_timeout)
    if failures := failures_of(fill, image.layer_size, 1):
        raise RuntimeError(f"filling the cache failed: {failures}")
    if running.mirror is not None:
        wait_cached(cached_path(running.mirror.cache_dir, image.layer_digest), image.layer_size)
    ctx.upstream.settle()


def run_warm_blob_phase(ctx: Context) -> PhaseReport:
    started = time.monotonic()
    plan = ctx.plan
    image = ctx.big()
    report = PhaseReport(
        "warm-blob",
        f"warm blob: {plan.warm_clients} parallel curl clients, each {_repeats(ctx, image)}x a "
        f"full GET of a cached {image.layer_size / MIB:.0f} MiB blob",
    )
    live: list[tuple[str, str]] = []  # (name, url of the blob)
    samplers: dict[str, RssSampler] = {}
    stops = []
    mirrors: dict[str, tuple[MirrorServer, str, float]] = {}
    runs: list[BlobRun] = []
    checks: list[str] = []
    try:
        for entrant in LINEUP:
            try:
                running = start(ctx, entrant)
            except Exception as e:
                report.errors.append(f"{entrant.name}: did not start: {e}")
                continue
            stops.append(running.stop)
            try:
                _fill(ctx, running, image)
            except Exception as e:
                report.errors.append(f"{entrant.name}: {type(e).__name__}: {e}")
                continue
            if entrant == EMBEDDED_W1 and running.mirror is not None:
                # nginx serves this mirror's cache directory: the very same file.
                nginx = NginxServer(ctx.scratch("nginx"), running.mirror.cache_dir)
                nginx.start()
                stops.append(nginx.stop)
                blob = cached_path(running.mirror.cache_dir, image.layer_digest)
                live.insert(0, (NGINX, f"{nginx.url}/{blob.relative_to(running.mirror.cache_dir)}"))
                samplers[NGINX] = RssSampler(nginx.pid).__enter__()
            url = running.url + image.blob_path(image.layer_digest)
            if running.mirror is not None:
                mirrors[entrant.name] = (running.mirror, url, served_from_cache(running.mirror))
            live.append((entrant.name, url))
            samplers[entrant.name] = RssSampler(running.pid).__enter__()
        for run in range(plan.runs):
            for name, url in live:
                runs.append(_one_run(name, url, run, ctx, image))
        checks = _check_mirrors(ctx, report, runs, mirrors)
    except Exception as e:
        report.errors.append(f"{type(e).__name__}: {e}")
    finally:
        for name, sampler in samplers.items():
            ctx.record_memory("warm-blob", name, sampler.stop())
        for stop in stops:
            stop()
    for name, (mirror, _, _) in mirrors.items():
        problems = mirror.problems()
        report.data.setdefault("mirror_logs", {})[name] = problems
        report.errors += describe_problems(f"warm-blob, {name}", problems)
    _summarize(report, runs)
    report.lines += ["", *checks] if checks else []
    report.seconds = time.monotonic() - started
    return report


def _summarize(report: PhaseReport, runs: list[BlobRun]) -> None:
    names = list(dict.fromkeys(r.target for r in runs))
    baseline = median([r.mb_per_s for r in runs if r.target == NGINX and r.mb_per_s])
    rows = []
    summary = {}
    for name in names:
        ours = [r for r in runs if r.target == name]
        rate = median([r.mb_per_s for r in ours if r.mb_per_s])
        ttfb = median([r.median_ttfb_ms for r in ours if r.median_ttfb_ms is not None])
        failed = sum(1 for r in ours if r.failures)
        is_mirror = name.startswith("mirror")
        rows.append(
            [
                name,
                fmt(rate),
                " ".join(fmt(r.mb_per_s) for r in ours),
                fmt(ratio(rate, baseline), ".2f", "x"),
                fmt(ttfb, ".2f"),
                "/".join(str(r.upstream_requests) for r in ours),
                str(failed),
                "(baseline)" if name == NGINX else GOAL if is_mirror else "(reference)",
            ]
        )
        summary[name] = {
            "mb_per_s": rate,
            "ratio_vs_nginx": ratio(rate, baseline),
            "upstream_requests_per_run": [r.upstream_requests for r in ours],
        }
        report.errors += [f"{name} run {r.run}: {f}" for r in ours for f in r.failures[:3]]
    headers = ["server", "MB/s", "runs MB/s", "xnginx", "TTFB ms", "upstream/run"]
    headers += ["failed runs", "target"]
    report.lines = table(headers, rows)
    report.data.update({"summary": summary, "runs": runs})
