"""Manifest hits: wrk on a fresh tag and on a digest, the mirror in four set-ups and the CNCF
registry's proxy mode as the reference, interleaved round by round so drift hits all alike.
Two set-ups run again with `metrics = false`, so what counting costs a hit is a ratio measured
in the same rounds."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.context import Context, describe_problems
from bench.curl import fetch_parallel
from bench.procs import tree_cpu_seconds
from bench.redisinfo import total_commands
from bench.report import PhaseReport, table
from bench.rss import RssSampler
from bench.servers import MirrorServer, start_proxy_registry
from bench.stats import fmt, median, ratio
from bench.upstream import ACCEPT_MANIFESTS
from bench.wrk import WrkResult, run_wrk
from tests.support.redis_server import RedisServer

REFERENCE = "docker-registry proxy"
GOAL = "≥10x proxy, 0 upstream"
GOAL_W2 = "≥10x proxy, ≥15000/s, 0 upstream"
GOAL_METRICS = "≥0.90x"
OFF = " metrics off"


@dataclass(frozen=True)
class Setup:
    name: str
    workers: int
    redis: bool
    goal: str
    metrics: bool = True


SETUPS = (
    Setup("mirror embedded w1", 1, False, GOAL),
    Setup("mirror redis w1", 1, True, GOAL),
    Setup("mirror redis w2", 2, True, GOAL_W2),
    Setup("mirror embedded w2", 2, False, GOAL_W2),
    # The same as two of the above, without metrics: the figure to compare them with.
    Setup(f"mirror embedded w1{OFF}", 1, False, GOAL, metrics=False),
    Setup(f"mirror embedded w2{OFF}", 2, False, GOAL_W2, metrics=False),
)


@dataclass
class Target:
    """A running server under load, with what it takes to measure and stop it."""

    name: str
    url: str
    goal: str
    sampler: RssSampler
    stop: Callable[[], None]
    mirror: MirrorServer | None = None
    redis: RedisServer | None = None


@dataclass(frozen=True)
class Measurement:
    target: str
    reference: str  # "tag" or "digest"
    run: int
    wrk: WrkResult | None
    upstream_requests: int | None
    redis_commands: int | None
    error: str | None = None
    cpu_us_per_request: float | None = None  # the mirror's processes only


@dataclass
class _State:
    targets: list[Target] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)


def _start_mirror(ctx: Context, setup: Setup) -> Target:
    redis = None
    if setup.redis:
        redis = RedisServer(ctx.scratch(f"redis-{setup.name.replace(' ', '-')}"))
        redis.start()
    extra_args: list[str] = []
    if not setup.metrics:
        config = ctx.scratch(f"config-{setup.name.replace(' ', '-')}") / "mirror.toml"
        config.write_text("metrics = false\n")
        extra_args = ["--config", str(config)]
    mirror = ctx.mirror(
        setup.name.replace(" ", "-"),
        workers=setup.workers,
        redis_url=redis.url if redis else None,
        extra_args=extra_args,
    )
    try:
        mirror.start()
    except BaseException:
        mirror.stop()
        if redis:
            redis.stop()
        raise

    def stop() -> None:
        mirror.stop()
        if redis:
            redis.stop()

    sampler = RssSampler(mirror.pid).__enter__()
    return Target(setup.name, mirror.url, setup.goal, sampler, stop, mirror, redis)


def _start_reference(ctx: Context) -> Target:
    registry = start_proxy_registry(ctx.scratch("proxy-registry"), ctx.upstream.url)
    assert registry.pid is not None
    sampler = RssSampler(registry.pid).__enter__()
    return Target(REFERENCE, registry.url, "(reference)", sampler, registry.stop)


def _warm(ctx: Context, target: Target, paths: dict[str, str]) -> None:
    """One GET of each reference (it must succeed), then a short load so every worker has it."""
    run = fetch_parallel([[target.url + p for p in paths.values()]], headers=ACCEPT_MANIFESTS)
    statuses = [t.status for c in run.clients for t in c.transfers]
    if statuses != [200] * len(paths):
        raise RuntimeError(f"{target.name}: warm-up GETs answered {statuses}")
    for path in paths.values():
        # Full concurrency, so that every worker process accepts connections and serves it.
        run_wrk(
            target.url + path,
            seconds=1,
            connections=ctx.plan.wrk_connections,
            threads=ctx.plan.wrk_threads,
            headers=ACCEPT_MANIFESTS,
        )


def _measure(ctx: Context, target: Target, kind: str, path: str, run: int) -> Measurement:
    plan = ctx.plan
    try:
        # A server still busy from the previous run (the proxy finishing its upstream calls)
        # would steal CPU from this one and add its requests to this count.
        ctx.upstream.settle()
        mark = ctx.upstream.mark()
        before = total_commands(target.redis.port) if target.redis else None
        cpu_before = tree_cpu_seconds(target.mirror.pid) if target.mirror else None
        result = run_wrk(
            target.url + path,
            seconds=plan.wrk_seconds,
            connections=plan.wrk_connections,
            threads=plan.wrk_threads,
            headers=ACCEPT_MANIFESTS,
        )
        # The INFO that took `before` is itself counted in the difference.
        after = total_commands(target.redis.port) if target.redis else None
        commands = after - before - 1 if after is not None and before is not None else None
        cpu = None
        if target.mirror is not None and cpu_before is not None and result.requests:
            spent = tree_cpu_seconds(target.mirror.pid) - cpu_before
            cpu = spent / result.requests * 1e6
        traffic = ctx.upstream.since(mark)
        return Measurement(target.name, kind, run, result, traffic.requests, commands, None, cpu)
    except Exception as e:
        return Measurement(target.name, kind, run, None, None, None, f"{type(e).__name__}: {e}")


def run_manifest_phase(ctx: Context) -> PhaseReport:
    started = time.monotonic()
    report = PhaseReport(
        "manifest",
        f"manifest hits: wrk {ctx.plan.wrk_connections} connections, {ctx.plan.wrk_threads} "
        f"threads, {ctx.plan.wrk_seconds} s, Accept: the 4 manifest types",
    )
    image = ctx.small
    paths = {"tag": image.manifest_path(image.tag), "digest": image.manifest_path(image.digest)}
    state = _State()
    try:
        starters: list[tuple[str, Callable[[], Target]]] = [
            (setup.name, functools.partial(_start_mirror, ctx, setup)) for setup in SETUPS
        ]
        starters.append((REFERENCE, functools.partial(_start_reference, ctx)))
        for name, starter in starters:
            try:
                target = starter()
            except Exception as e:
                report.errors.append(f"{name}: did not start: {e}")
                continue
            state.targets.append(target)
            try:
                _warm(ctx, target, paths)
            except Exception as e:
                report.errors.append(f"{name}: warm-up failed: {e}")
                state.targets.remove(target)
                _finish(ctx, target, report)
        for run in range(ctx.plan.runs):
            for kind, path in paths.items():
                for target in state.targets:
                    state.measurements.append(_measure(ctx, target, kind, path, run))
    finally:
        for target in state.targets:
            _finish(ctx, target, report)
    _summarize(report, state, paths)
    report.seconds = time.monotonic() - started
    return report


def _finish(ctx: Context, target: Target, report: PhaseReport) -> None:
    ctx.record_memory("manifest", target.name, target.sampler.stop())
    target.stop()
    if target.mirror is not None:
        problems = target.mirror.problems()
        report.data.setdefault("mirror_logs", {})[target.name] = problems
        report.errors += describe_problems(
            f"manifest, {target.name}", problems, incomplete_expected=True
        )


def _summarize(report: PhaseReport, state: _State, paths: dict[str, str]) -> None:
    rows = []
    summary: dict[str, dict[str, object]] = {}
    names = [t.name for t in state.targets]
    for kind in paths:
        reference_rps = median(
            [
                m.wrk.requests_per_s
                for m in state.measurements
                if m.target == REFERENCE and m.reference == kind and m.wrk
            ]
        )
        for name in names:
            ours = [m for m in state.measurements if m.target == name and m.reference == kind]
            done = [m.wrk for m in ours if m.wrk]
            rps = median([w.requests_per_s for w in done])
            upstream = [m.upstream_requests for m in ours if m.upstream_requests is not None]
            per_hit = [
                m.redis_commands / m.wrk.requests
                for m in ours
                if m.redis_commands is not None and m.wrk and m.wrk.requests
            ]
            failures = sum(w.non_2xx + w.socket_errors for w in done)
            goal = next((t.goal for t in state.targets if t.name == name), "")
            rows.append(
                [
                    name,
                    kind,
                    fmt(rps),
                    fmt(median([w.p50_ms for w in done]), ".2f"),
                    fmt(median([w.p99_ms for w in done]), ".2f"),
                    "/".join(str(u) for u in upstream) or "-",
                    fmt(ratio(rps, reference_rps), ".1f", "x"),
                    fmt(median(per_hit), ".3f"),
                    str(failures),
                    goal,
                ]
            )
            summary.setdefault(name, {})[kind] = {
                "requests_per_s": rps,
                "ratio_vs_reference": ratio(rps, reference_rps),
                "redis_commands_per_hit": median(per_hit),
                "upstream_requests_per_run": upstream,
                "failures": failures,
            }
            report.errors += [f"{name} {kind} run {m.run}: {m.error}" for m in ours if m.error]
    headers = ["server", "ref", "req/s", "p50 ms", "p99 ms", "upstream/run", "xproxy"]
    headers += ["redis cmd/hit", "non-2xx+err", "target"]
    report.lines = table(headers, rows)
    cost_lines, cost = _metrics_cost(state, paths)
    report.lines += ["", *cost_lines] if cost_lines else []
    report.data.update(
        {"summary": summary, "runs": state.measurements, "paths": paths, "metrics_on_off": cost}
    )


def _metrics_cost(state: _State, paths: dict[str, str]) -> tuple[list[str], dict[str, object]]:
    """Each set-up with metrics against the same without, measured in the same rounds: the
    median req/s with metrics over the median without, and the CPU time per request each
    spent (which the other work on a shared machine hardly changes)."""

    def rps(target: str, kind: str) -> float | None:
        return median(
            [
                m.wrk.requests_per_s
                for m in state.measurements
                if m.target == target and m.reference == kind and m.wrk
            ]
        )

    def cpu(target: str, kind: str) -> float | None:
        return median(
            [
                m.cpu_us_per_request
                for m in state.measurements
                if m.target == target and m.reference == kind and m.cpu_us_per_request
            ]
        )

    rows, data = [], {}
    names = {t.name for t in state.targets}
    for off in sorted(name for name in names if name.endswith(OFF)):
        on = off.removesuffix(OFF)
        if on not in names:
            continue
        for kind in paths:
            cost = ratio(rps(on, kind), rps(off, kind))
            cpu_on, cpu_off = cpu(on, kind), cpu(off, kind)
            data[f"{on} {kind}"] = {"rate_on_off": cost, "cpu_us": [cpu_on, cpu_off]}
            row = [on, kind, fmt(rps(on, kind)), fmt(rps(off, kind)), fmt(cost, ".3f", "x")]
            row += [
                fmt(cpu_on, ".1f"),
                fmt(cpu_off, ".1f"),
                fmt(ratio(cpu_off, cpu_on), ".3f", "x"),
            ]
            rows.append([*row, GOAL_METRICS])
    if not rows:
        return [], data
    headers = ["metrics on/off", "ref", "on req/s", "off req/s", "on/off"]
    headers += ["on CPU us/req", "off CPU us/req", "off/on CPU", "target"]
    return table(headers, rows), data
