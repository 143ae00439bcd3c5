"""How a server sends a file: strace, attached to its processes while a transfer runs, adds up
what their sendfile(2) calls sent, to set beside the bytes the clients received."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.tools import find_tool

_RESULT = re.compile(r"sendfile(?:\(| resumed>).*\)\s+=\s+(\d+)\s*$")


def sendfile_bytes(pids: Sequence[int], trace: Path, action: Callable[[], object]) -> int:
    """Bytes `pids` sent with sendfile while `action` ran (their event loops are their main
    threads, which is where asyncio calls sendfile)."""
    argv = [find_tool("strace"), "-e", "trace=sendfile", "-e", "signal=none", "-o", str(trace)]
    for pid in pids:
        argv += ["-p", str(pid)]
    tracer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert tracer.stderr is not None
        attached = 0
        deadline = time.monotonic() + 10
        while attached < len(pids) and time.monotonic() < deadline:
            line = tracer.stderr.readline()
            if not line:
                break
            attached += "attached" in line
        if attached < len(pids):
            raise RuntimeError(f"strace attached to {attached} of {len(pids)} processes")
        action()
    finally:
        tracer.send_signal(signal.SIGINT)  # detaches; the traced processes go on
        tracer.wait(timeout=10)
    total = 0
    for line in trace.read_text(errors="replace").splitlines():
        if match := _RESULT.search(line):
            total += int(match.group(1))
    return total
