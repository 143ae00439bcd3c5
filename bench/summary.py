"""The table of targets: each figure of the mirror next to the references measured in the same
run, the target, and whether every set-up it applies to meets it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.lineup import EMBEDDED_W2, LINEUP, MIRRORS, REDIS_W2, Entrant
from bench.manifest import GOAL_P99, GOAL_RPS
from bench.memory import MemoryRecord
from bench.pull import GOAL_FIRST_BYTE_MS, GOAL_PULL
from bench.report import PhaseReport, table
from bench.stats import fmt

GOAL_WARM = 0.95  # of nginx sendfile's rate
GOAL_MEMORY_MIB = 100.0  # peak resident memory of any one mirror process
SHORT = {
    "mirror embedded w1": "w1",
    "mirror embedded w2": "w2",
    "mirror redis w1": "redis w1",
    "mirror redis w2": "redis w2",
    "nginx cache": "nginx cache",
    "docker-registry proxy": "CNCF proxy",
}


@dataclass(frozen=True)
class Row:
    """One figure: how to read it for an entrant, how to print it, and the target."""

    label: str
    value: Callable[[Entrant], float | None]
    spec: str
    target: str
    meets: Callable[[float], bool] | None = None
    applies_to: Sequence[Entrant] = MIRRORS


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def summary_report(reports: Sequence[PhaseReport], memory: Sequence[MemoryRecord]) -> PhaseReport:
    phases = {r.name: r.data for r in reports}

    def manifest(kind: str, figure: str) -> Callable[[Entrant], float | None]:
        return lambda e: _get(phases, "manifest", "summary", e.name, kind, figure)

    def upstream_requests(entrant: Entrant) -> float | None:
        """What the hit runs (their warm-up load included) asked upstream, in total."""
        counts = []
        for kind in ("tag", "digest"):
            found = _get(phases, "manifest", "summary", entrant.name, kind)
            if isinstance(found, dict):
                counts += found["upstream_requests_per_run"]
                counts += [found["upstream_requests_warmup"] or 0]
        return sum(counts) if counts else None

    def pulled(group: str, figure: str) -> Callable[[Entrant], float | None]:
        return lambda e: _get(phases, "cold", "pull_summary", group, e.name, figure)

    def upstream_bytes(entrant: Entrant) -> float | None:
        ratios = [
            r
            for group in ("skopeo loopback", "curl loopback")
            for r in _get(
                phases, "cold", "pull_summary", group, entrant.name, "upstream_bytes_ratios"
            )
            or ()
            if r is not None
        ]
        # The worst of them: any pull that fetched more (or less) than the image counts.
        return max(ratios, key=lambda r: abs(r - 1.0)) if ratios else None

    def peak_mib(entrant: Entrant) -> float | None:
        peaks = [
            r.peak.max_process_hwm_mb
            for r in memory
            if r.target == entrant.name or r.target.startswith(entrant.name + " ")
        ]
        return max(peaks) * 1e6 / (1 << 20) if peaks else None

    two_workers = (EMBEDDED_W2, REDIS_W2)

    def hits(kind: str) -> list[Row]:
        return [
            Row(f"manifest by {kind}, req/s", manifest(kind, "requests_per_s"), ",.0f", ""),
            Row("  p99 ms", manifest(kind, "p99_ms"), ".1f", ""),
            Row(
                "  req/s ÷ nginx cache",
                manifest(kind, "ratio_vs_nginx_cache"),
                ".2f",
                f"≥{GOAL_RPS:.2f} (w2)",
                lambda v: v >= GOAL_RPS,
                two_workers,
            ),
            Row(
                "  p99 ÷ nginx cache",
                manifest(kind, "p99_vs_nginx_cache"),
                ".2f",
                f"≤{GOAL_P99:.2f} (w2)",
                lambda v: v <= GOAL_P99,
                two_workers,
            ),
        ]

    rows = [
        *hits("tag"),
        *hits("digest"),
        Row("upstream requests, hit runs", upstream_requests, ".0f", "0", lambda v: v == 0),
        Row(
            "cold pull ÷ direct (skopeo)",
            pulled("skopeo loopback", "ratio"),
            ".2f",
            f"≤{GOAL_PULL:.2f}",
            lambda v: v <= GOAL_PULL,
        ),
        Row("cold pull ÷ direct (curl)", pulled("curl loopback", "ratio"), ".2f", ""),
        Row(
            "cold blob first byte, ms over direct",
            lambda e: _get(phases, "cold", "pull_summary", "first byte", e.name, "over_direct_ms"),
            "+.1f",
            f"≤+{GOAL_FIRST_BYTE_MS:.0f}",
            lambda v: v <= GOAL_FIRST_BYTE_MS,
        ),
        Row("upstream bytes ÷ image, cold pulls", upstream_bytes, ".2f", "1.00", _is_one),
        Row(
            "warm blob ÷ nginx sendfile",
            lambda e: _get(phases, "warm-blob", "summary", e.name, "ratio_vs_nginx"),
            ".2f",
            f"≥{GOAL_WARM:.2f}",
            lambda v: v >= GOAL_WARM,
        ),
        Row(
            "peak memory per process, MiB",
            peak_mib,
            ".0f",
            f"≤{GOAL_MEMORY_MIB:.0f}",
            lambda v: v <= GOAL_MEMORY_MIB,
        ),
    ]
    report = PhaseReport(
        "summary", "the targets: the mirror against the references measured in this run"
    )
    lines = []
    heading = ""
    for row in rows:
        values = {e.name: row.value(e) for e in LINEUP}
        # An indented row ("  p99 ms") belongs to the row above it: keyed with it in the data.
        name = row.label.strip()
        heading = heading if row.label.startswith(" ") else name
        key = f"{heading}: {name}" if row.label.startswith(" ") else name
        lines.append(
            [row.label]
            + [fmt(values[e.name], row.spec) for e in LINEUP]
            + [row.target, _verdict(row, values)]
        )
        report.data[key] = values
    report.lines = table(["", *(SHORT[e.name] for e in LINEUP), "target", "met"], lines)
    return report


def _is_one(value: float) -> bool:
    return round(value, 2) == 1.0


def _verdict(row: Row, values: dict[str, float | None]) -> str:
    """ "yes" when every set-up the target applies to meets it; else which miss (or were not
    measured)."""
    if row.meets is None:
        return ""
    measured = {e.name: value for e in row.applies_to if (value := values[e.name]) is not None}
    if not measured:
        return "not measured"
    missed = [SHORT[name] for name, value in measured.items() if not row.meets(value)]
    unmeasured = [SHORT[e.name] for e in row.applies_to if e.name not in measured]
    verdict = "yes" if not missed else "no: " + ", ".join(missed)
    return verdict + (f" (not measured: {', '.join(unmeasured)})" if unmeasured else "")
