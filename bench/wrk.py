"""Drive `wrk --latency` and read its report: requests/s, latency percentiles, failures."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from bench.tools import find_tool

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


class WrkFailed(RuntimeError):
    """wrk did not run or printed nothing we could read."""


def parse_wrk(output: str) -> WrkResult:
    percentiles = {p: float(v) * _UNITS_MS[u] for p, v, u in _PERCENTILE.findall(output)}
    total = _TOTAL.search(output)
    rps = _RPS.search(output)
    if total is None or rps is None or "50" not in percentiles or "99" not in percentiles:
        raise WrkFailed(f"unreadable wrk output: {output[-800:]}")
    errors = _SOCKET_ERRORS.search(output)
    non_2xx = _NON_2XX.search(output)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * _UNITS_MS[total.group(3)] / 1000,
        requests_per_s=float(rps.group(1)),
        p50_ms=percentiles["50"],
        p99_ms=percentiles["99"],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def run_wrk(
    url: str,
    *,
    seconds: int,
    connections: int,
    threads: int,
    headers: Mapping[str, str] | None = None,
) -> WrkResult:
    """One wrk run against `url`; a request slower than 5 s counts as a timeout error."""
    argv = [
        find_tool("wrk"),
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={seconds}s",
        "--timeout=5s",
        "--latency",
    ]
    for name, value in (headers or {}).items():
        argv += ["--header", f"{name}: {value}"]
    argv.append(url)
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise WrkFailed(f"wrk did not finish within {seconds + 60}s") from e
    if done.returncode != 0:
        raise WrkFailed(f"wrk exited with {done.returncode}: {done.stderr[-500:]}")
    return parse_wrk(done.stdout)
