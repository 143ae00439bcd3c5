"""Manifest hits: wrk on a fresh tag and on a digest, the mirror in four set-ups against nginx's
caching proxy and the CNCF registry's proxy mode, interleaved round by round so drift hits all
alike. Two set-ups run again with `metrics = false`, so what counting costs a hit is a ratio
measured in the same rounds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench.context import Context, describe_problems
from bench.curl import fetch_parallel
from bench.lineup import (
    CNCF_PROXY,
    EMBEDDED_W1_OFF,
    EMBEDDED_W2_OFF,
    LINEUP,
    METRICS_OFF,
    NGINX_CACHE,
    Entrant,
    Running,
    start,
)
from bench.procs import tree_cpu_seconds
from bench.redisinfo import total_commands
from bench.report import PhaseReport, table
from bench.rss import RssSampler
from bench.stats import fmt, median, ratio
from bench.upstream import ACCEPT_MANIFESTS
from bench.wrk import WrkResult, run_wrk

# With two workers (and the request log on), against nginx's cache in the same run.
GOAL_RPS = 0.5  # at least this share of nginx's requests/s
GOAL_P99 = 2.0  # at most this multiple of nginx's p99
GOAL_METRICS = "≥0.90x"


def goal(entrant: Entrant) -> str:
    if not entrant.is_mirror or not entrant.metrics:
        return "(reference)"
    if entrant.workers == 2:
        return f"≥{GOAL_RPS}x nginx cache, p99 ≤{GOAL_P99:.0f}x; 0 upstream"
    return "0 upstream"


@dataclass
class Target:
    """A running server under load, with what it takes to measure and stop it."""

    running: Running
    sampler: RssSampler
    warmup_upstream: dict[str, int] = field(default_factory=dict)  # per reference

    @property
    def name(self) -> str:
        return self.running.entrant.name


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


def _warm(ctx: Context, target: Target, paths: dict[str, str]) -> None:
    """One GET of each reference (it must succeed), then a short load so every worker has it.
    The load is the start of the hit run: what it asks upstream is counted."""
    url = target.running.url
    run = fetch_parallel([[url + p for p in paths.values()]], headers=ACCEPT_MANIFESTS)
    statuses = [t.status for c in run.clients for t in c.transfers]
    if statuses != [200] * len(paths):
        raise RuntimeError(f"{target.name}: warm-up GETs answered {statuses}")
    ctx.upstream.settle()
    for kind, path in paths.items():
        mark = ctx.upstream.mark()
        # Full concurrency, so that every worker process accepts connections and serves it.
        run_wrk(
            url + path,
            seconds=1,
            connections=ctx.plan.wrk_connections,
            threads=ctx.plan.wrk_threads,
            headers=ACCEPT_MANIFESTS,
        )
        ctx.upstream.settle()
        target.warmup_upstream[kind] = ctx.upstream.since(mark).requests


def _measure(ctx: Context, target: Target, kind: str, path: str, run: int) -> Measurement:
    plan = ctx.plan
    try:
        # A server still busy from the previous run (the proxy finishing its upstream calls)
        # would steal CPU from this one and add its requests to this count.
        ctx.upstream.settle()
        mark = ctx.upstream.mark()
        redis = target.running.redis
        before = total_commands(redis.port) if redis else None
        cpu_before = tree_cpu_seconds(target.running.pid)
        result = run_wrk(
            target.running.url + path,
            seconds=plan.wrk_seconds,
            connections=plan.wrk_connections,
            threads=plan.wrk_threads,
            headers=ACCEPT_MANIFESTS,
        )
        # The INFO that took `before` is itself counted in the difference.
        after = total_commands(redis.port) if redis else None
        commands = after - before - 1 if after is not None and before is not None else None
        cpu = None
        if target.running.mirror is not None and result.requests:
            spent = tree_cpu_seconds(target.running.pid) - cpu_before
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
        for entrant in (*LINEUP, EMBEDDED_W1_OFF, EMBEDDED_W2_OFF):
            try:
                running = start(ctx, entrant)
            except Exception as e:
                report.errors.append(f"{entrant.name}: did not start: {e}")
                continue
            target = Target(running, RssSampler(running.pid).__enter__())
            state.targets.append(target)
            try:
                _warm(ctx, target, paths)
            except Exception as e:
                report.errors.append(f"{entrant.name}: warm-up failed: {e}")
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
    target.running.stop()
    if target.running.mirror is not None:
        problems = target.running.mirror.problems()
        report.data.setdefault("mirror_logs", {})[target.name] = problems
        report.errors += describe_problems(
            f"manifest, {target.name}", problems, incomplete_expected=True
        )


def _measured(state: _State, name: str, kind: str) -> tuple[list[Measurement], list[WrkResult]]:
    """The measurements of one server on one reference, and the wrk runs among them."""
    ours = [m for m in state.measurements if m.target == name and m.reference == kind]
    return ours, [m.wrk for m in ours if m.wrk]


def _summarize(report: PhaseReport, state: _State, paths: dict[str, str]) -> None:
    rows = []
    summary: dict[str, dict[str, object]] = {}
    for kind in paths:
        nginx = _measured(state, NGINX_CACHE.name, kind)[1]
        nginx_rps = median([w.requests_per_s for w in nginx])
        nginx_p99 = median([w.p99_ms for w in nginx])
        proxy_rps = median([w.requests_per_s for w in _measured(state, CNCF_PROXY.name, kind)[1]])
        for target in state.targets:
            name = target.name
            ours, done = _measured(state, name, kind)
            rps = median([w.requests_per_s for w in done])
            p99 = median([w.p99_ms for w in done])
            upstream = [m.upstream_requests for m in ours if m.upstream_requests is not None]
            warmup = target.warmup_upstream.get(kind)
            per_hit = [
                m.redis_commands / m.wrk.requests
                for m in ours
                if m.redis_commands is not None and m.wrk and m.wrk.requests
            ]
            failures = sum(w.non_2xx + w.socket_errors for w in done)
            rows.append(
                [
                    name,
                    kind,
                    fmt(rps),
                    fmt(median([w.p50_ms for w in done]), ".2f"),
                    fmt(p99, ".2f"),
                    f"{fmt(warmup, 'd')}+{'/'.join(str(u) for u in upstream) or '-'}",
                    fmt(ratio(rps, nginx_rps), ".2f", "x"),
                    fmt(ratio(p99, nginx_p99), ".2f", "x"),
                    fmt(ratio(rps, proxy_rps), ".1f", "x"),
                    fmt(median(per_hit), ".3f"),
                    str(failures),
                    goal(target.running.entrant),
                ]
            )
            summary.setdefault(name, {})[kind] = {
                "requests_per_s": rps,
                "p99_ms": p99,
                "ratio_vs_nginx_cache": ratio(rps, nginx_rps),
                "p99_vs_nginx_cache": ratio(p99, nginx_p99),
                "ratio_vs_proxy": ratio(rps, proxy_rps),
                "redis_commands_per_hit": median(per_hit),
                "upstream_requests_warmup": warmup,
                "upstream_requests_per_run": upstream,
                "failures": failures,
            }
            report.errors += [f"{name} {kind} run {m.run}: {m.error}" for m in ours if m.error]
    headers = ["server", "ref", "req/s", "p50 ms", "p99 ms", "upstream warm-up+runs", "xnginx"]
    headers += ["p99 xnginx", "xproxy", "redis cmd/hit", "non-2xx+err", "target"]
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

    def rps(name: str, kind: str) -> float | None:
        return median([w.requests_per_s for w in _measured(state, name, kind)[1]])

    def cpu(name: str, kind: str) -> float | None:
        ours = _measured(state, name, kind)[0]
        return median([m.cpu_us_per_request for m in ours if m.cpu_us_per_request])

    rows, data = [], {}
    names = {t.name for t in state.targets}
    for off in sorted(name for name in names if name.endswith(METRICS_OFF)):
        on = off.removesuffix(METRICS_OFF)
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
