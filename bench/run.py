"""Runs the chosen phases in order, each isolated: one failing does not stop the others."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.abuse import run_abuse_phase
from bench.cold import run_cold_phase
from bench.context import Context
from bench.evict import run_evict_phase
from bench.machine import describe_machine
from bench.manifest import run_manifest_phase
from bench.memory import memory_report
from bench.plan import Plan
from bench.push import run_push_phase
from bench.report import PhaseReport, render, write_json
from bench.summary import summary_report
from bench.tools import check_tools
from bench.upstream import Upstream
from bench.warm_blob import run_warm_blob_phase

PHASES: dict[str, Callable[[Context], PhaseReport]] = {
    "manifest": run_manifest_phase,
    "warm-blob": run_warm_blob_phase,
    "cold": run_cold_phase,
    "abuse": run_abuse_phase,
    "push": run_push_phase,
    "evict": run_evict_phase,
}
ALL_PHASES = (*PHASES, "memory")


def selected(names: Sequence[str]) -> list[str]:
    """Phases to run in order; `memory` alone means the phases that stream the big blob."""
    chosen = set(names) or set(ALL_PHASES)
    if chosen == {"memory"}:
        chosen |= {"warm-blob", "cold"}
    return [name for name in PHASES if name in chosen]


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _run_phase(name: str, ctx: Context) -> PhaseReport:
    started = time.monotonic()
    _progress(f"phase {name} ...")
    try:
        report = PHASES[name](ctx)
    except Exception as e:
        report = PhaseReport(name, f"{name}: failed")
        report.errors.append(f"{type(e).__name__}: {e}")
        report.data["traceback"] = traceback.format_exc()
        report.seconds = time.monotonic() - started
    _progress(f"phase {name} done in {report.seconds:.0f} s, {len(report.errors)} error lines")
    return report


def run(
    plan: Plan,
    phases: Sequence[str],
    output: Path,
    *,
    keep_workdir: bool = False,
    mirror_source: Path | None = None,
) -> int:
    """Run the benchmark; 0 when it produced a report (whatever the figures), 2 on setup errors."""
    tools = check_tools()
    machine = describe_machine()
    workdir = Path(tempfile.mkdtemp(prefix="mirror-bench-"))
    _progress(f"scratch directory {workdir}; tools {', '.join(tools.values())}")
    if mirror_source is not None:
        _progress(f"mirror runs from {mirror_source}")
    reports: list[PhaseReport] = []
    upstream = None
    try:
        upstream = Upstream(workdir / "upstream")
        small = upstream.seed("bench/small", "v1", 4096, seed="small")
        ctx = Context(
            plan=plan,
            workdir=workdir / "runs",
            upstream=upstream,
            small=small,
            mirror_source=mirror_source,
        )
        for name in selected(phases):
            reports.append(_run_phase(name, ctx))
        reports.append(memory_report(ctx.memory))
        reports.append(summary_report(reports, ctx.memory))
    finally:
        if upstream is not None:
            upstream.stop()
        if keep_workdir:
            _progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.write(render(machine, plan, reports))
    write_json(output, machine, plan, reports, mirror_source=mirror_source)
    _progress(f"wrote {output}")
    return 0
