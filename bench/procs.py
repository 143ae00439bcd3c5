"""Child processes the benchmark starts itself, and stops by their PID and nothing else."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.rss import descendants
from tests.support.processes import die_with_parent, direct, running


class Service:
    """One long-running server process with its output in a log file."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, cwd: Path | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._process.pid

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=die_with_parent,
            )
        running.add(self._process)

    def exited(self) -> int | None:
        """The exit status if the process has ended, else None."""
        return None if self._process is None else self._process.poll()

    def log_tail(self, lines: int = 2) -> str:
        """The last lines of the log (a traceback's last line names the error)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(line[:300] for line in kept)

    def wait_http(self, url: str, timeout: float = 20.0) -> None:
        """Wait until `url` answers anything below 500; fail early if the process exits."""

        def answers() -> bool:
            try:
                # Read to the end: a connection closed mid-answer is logged as incomplete.
                with direct.open(url, timeout=2) as response:
                    response.read()
                return True
            except urllib.error.HTTPError as e:
                return e.code < 500
            except OSError:
                return False

        self.wait_until(answers, f"answer {url}", timeout, interval=0.05)

    def wait_until(
        self, ready: Callable[[], bool], what: str, timeout: float = 20.0, interval: float = 0.02
    ) -> None:
        """Wait until `ready()` is true; fail early if the process exits, and after `timeout`
        with "<name> did not <what>"."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.exited()
            if status is not None:
                raise RuntimeError(f"{self.name} exited with {status}: {self.log_tail()}")
            if ready():
                return
            time.sleep(interval)
        raise RuntimeError(f"{self.name} did not {what} within {timeout:.0f}s")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM by PID, then SIGKILL if it does not exit in time.

        Processes it forked (workers) are killed by PID too if they outlive it: a worker does
        not inherit the parent-death signal, so nothing else would end it.
        """
        process, self._process = self._process, None
        if process is None:
            return
        children = [(pid, _cmdline(pid)) for pid in descendants(process.pid)[1:]]
        try:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        finally:
            running.discard(process)
        for pid, cmdline in children:
            # The command line must still match: the PID may have been reused meanwhile.
            if cmdline and _cmdline(pid) == cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user and system) used so far by `pid` and the processes below it: a cost
    that, unlike a rate, the other work on a shared machine hardly changes."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for process in descendants(pid):
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (proc(5))
    return total / ticks
