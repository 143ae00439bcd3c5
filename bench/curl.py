"""Parallel full downloads with `curl` processes: a client fast enough not to be the bottleneck.

Each client is its own curl process writing to /dev/null; `--write-out` reports per transfer
the status, bytes received, time to first byte, total time and redirects followed.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.tools import find_tool

# In a config file a quoted value takes C-style escapes, so "\n" is a newline.
_WRITE_OUT = (
    '"%{http_code} %{size_download} %{time_starttransfer} %{time_total} %{num_redirects}\\n"'
)


@dataclass(frozen=True)
class Transfer:
    status: int
    bytes: int
    ttfb_s: float
    total_s: float
    redirects: int  # followed (with `follow_redirects`); status and bytes are the last answer's


@dataclass(frozen=True)
class ClientRun:
    """One curl process: its transfers in URL order and its exit code (non-zero: an error)."""

    transfers: list[Transfer]
    exit_code: int
    error: str


@dataclass(frozen=True)
class ParallelRun:
    wall_s: float  # from releasing the clients to the end of the last one
    clients: list[ClientRun]


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _config(
    urls: Sequence[str], headers: Mapping[str, str], timeout: float, follow_redirects: bool
) -> str:
    lines = [
        "silent",
        "show-error",
        'noproxy = "*"',
        f"max-time = {timeout}",
        f"write-out = {_WRITE_OUT}",
    ]
    if follow_redirects:
        lines.append("location")  # curl -L
    lines += [f"header = {_quoted(f'{name}: {value}')}" for name, value in headers.items()]
    for url in urls:
        lines += [f"url = {_quoted(url)}", 'output = "/dev/null"']
    return "\n".join(lines) + "\n"


def _parse(stdout: str) -> list[Transfer]:
    transfers = []
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 5:
            code, size, ttfb, total, redirects = parts
            transfers.append(
                Transfer(int(code), int(float(size)), float(ttfb), float(total), int(redirects))
            )
    return transfers


def fetch_parallel(
    clients: Sequence[Sequence[str]],
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 300.0,
    follow_redirects: bool = False,
) -> ParallelRun:
    """Run one curl per entry of `clients` at once; each fetches its URLs in order.

    Every process is started first and waits for its configuration on stdin; the clock starts
    when they are released, so process start-up (tens of ms for 50 curls) is not counted.
    """
    configs = [_config(urls, headers or {}, timeout, follow_redirects) for urls in clients]
    processes = [
        subprocess.Popen(
            [find_tool("curl"), "--config", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in clients
    ]
    started = time.monotonic()
    for process, config in zip(processes, configs, strict=True):
        assert process.stdin is not None
        process.stdin.write(config)
        process.stdin.close()
        process.stdin = None  # already closed: communicate() must not flush it
    outputs: list[tuple[str, str, int]] = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        outputs.append((out, err, process.returncode))
    wall = time.monotonic() - started
    runs = [ClientRun(_parse(out), code, err.strip()[:300]) for out, err, code in outputs]
    return ParallelRun(wall_s=wall, clients=runs)
