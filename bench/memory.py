"""Peak RSS of the mirror's processes, gathered while the other phases run."""

from __future__ import annotations

from dataclasses import dataclass

from bench.report import PhaseReport, table
from bench.rss import MemoryPeak
from bench.stats import fmt

GOAL = "≤100 MiB per process"


@dataclass(frozen=True)
class MemoryRecord:
    phase: str
    target: str
    peak: MemoryPeak


def memory_report(records: list[MemoryRecord]) -> PhaseReport:
    """One row per phase and server set-up: the highest peaks over all its runs."""
    report = PhaseReport("memory", "memory: peak RSS of the server processes in each phase")
    groups: dict[tuple[str, str], list[MemoryPeak]] = {}
    for record in records:
        groups.setdefault((record.phase, record.target), []).append(record.peak)
    rows = [
        [
            phase,
            target,
            str(len(peaks)),
            str(max(p.processes for p in peaks)),
            fmt(max(p.total_rss_mb for p in peaks), ".1f"),
            fmt(max(p.max_process_hwm_mb for p in peaks), ".1f"),
            GOAL if target.startswith("mirror") else "(reference)",
        ]
        for (phase, target), peaks in groups.items()
    ]
    if not rows:
        report.lines.append("no server was measured (run a phase besides memory)")
        return report
    report.lines = table(
        ["phase", "server", "runs", "procs", "peak RSS sum MB", "max proc HWM MB", "target"], rows
    )
    report.lines.append(
        "peak RSS sum: highest sum of VmRSS over the process tree (sampled every 50 ms); "
        "max proc HWM: highest VmHWM of any one process"
    )
    report.data = {"records": records}
    return report
