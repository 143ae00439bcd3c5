"""The printed table and bench/results.json: figures next to their targets, raw numbers kept."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.machine import Machine
from bench.plan import MIB, Plan


@dataclass
class PhaseReport:
    """One phase's printed lines, its raw data for the JSON file, and what went wrong."""

    name: str
    title: str
    lines: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell; the first column left-aligned, the rest right."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        parts = [first.ljust(widths[0])]
        parts += [cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    return [line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def header_lines(machine: Machine, plan: Plan) -> list[str]:
    mode = "quick" if plan.quick else "full"
    return [
        "mirror benchmark",
        f"machine: {machine.cpus} CPUs, {machine.cpu_model}, kernel {machine.kernel}, "
        f"{machine.memory_mb} MB RAM, Python {machine.python}",
        f"plan: {mode}; "
        + (f"median of {plan.runs} runs" if plan.runs > 1 else "one run")
        + f"; blob {plan.blob_bytes // MIB} MiB; "
        f"wrk {plan.wrk_connections} connections, {plan.wrk_threads} threads, "
        f"{plan.wrk_seconds} s",
    ]


def render(machine: Machine, plan: Plan, reports: Sequence[PhaseReport]) -> str:
    out = header_lines(machine, plan)
    for report in reports:
        out += ["", f"== {report.title} ({report.seconds:.0f} s)"]
        out += report.lines
        out += [f"ERROR: {error}" for error in report.errors]
    return "\n".join(out) + "\n"


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_json(
    path: Path,
    machine: Machine,
    plan: Plan,
    reports: Sequence[PhaseReport],
    *,
    mirror_source: Path | None = None,
) -> None:
    document = {
        "machine": _plain(machine),
        "plan": _plain(plan),
        "mirror_source": str(mirror_source) if mirror_source else "installed package",
        "phases": {
            r.name: {"seconds": r.seconds, "errors": r.errors, **_plain(r.data)} for r in reports
        },
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
