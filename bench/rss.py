"""Peak memory of a server and its worker processes, sampled from /proc while a phase runs."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

KIB = 1024
MB = 1_000_000


def descendants(pid: int, limit: int = 256) -> list[int]:
    """`pid` and every process below it (workers forked by a supervisor), at most `limit`."""
    found: list[int] = []
    queue = [pid]
    while queue and len(found) < limit:
        current = queue.pop()
        found.append(current)
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                queue.extend(int(child) for child in (task / "children").read_text().split())
            except (OSError, ValueError):
                continue
    return found


def _status_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of one process in KiB; zeros once it is gone."""
    rss = hwm = 0
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


@dataclass(frozen=True)
class MemoryPeak:
    """Peaks over one sampling window, in MB (10^6 bytes)."""

    total_rss_mb: float  # highest sum of VmRSS over the process tree at one sample
    max_process_hwm_mb: float  # highest VmHWM (the kernel's own peak) of any one process
    processes: int


class RssSampler:
    """Samples the process tree of `pid` every `interval` seconds on a background thread."""

    def __init__(self, pid: int, interval: float = 0.05, max_seconds: float = 3600.0) -> None:
        self._pid = pid
        self._interval = interval
        self._max_seconds = max_seconds
        self._stop = threading.Event()
        self._peak_total = 0
        self._peak_hwm = 0
        self._seen: set[int] = set()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def sample(self) -> None:
        total = 0
        for pid in descendants(self._pid):
            rss, hwm = _status_kib(pid)
            if rss:
                self._seen.add(pid)
            total += rss
            self._peak_hwm = max(self._peak_hwm, hwm)
        self._peak_total = max(self._peak_total, total)

    def _run(self) -> None:
        deadline = time.monotonic() + self._max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.sample()
            self._stop.wait(self._interval)

    def stop(self) -> MemoryPeak:
        """Stop sampling (taking one last sample) and return the peaks."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=5)
            self.sample()
        return self.peak()

    def peak(self) -> MemoryPeak:
        return MemoryPeak(
            total_rss_mb=self._peak_total * KIB / MB,
            max_process_hwm_mb=self._peak_hwm * KIB / MB,
            processes=len(self._seen),
        )
