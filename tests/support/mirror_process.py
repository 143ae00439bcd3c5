"""`mirror serve` as a real process on a loopback port, optionally under a descriptor limit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import storage
from tests.support.processes import die_with_parent, direct, free_port, running


@dataclass
class MirrorProcess:
    """A started `mirror serve`; its combined output goes to `log`."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def entries(self) -> list[dict[str, Any]]:
        """The JSON lines logged so far."""
        found = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def open_descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def open_files_limit(self) -> tuple[int, int]:
        """The process's (soft, hard) RLIMIT_NOFILE, as the kernel reports it."""
        with open(f"/proc/{self.pid}/limits") as f:
            line = next(line for line in f if line.startswith("Max open files"))
        soft, hard = line.split()[3:5]
        return int(soft), int(hard)

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        running.discard(self.process)


def start_mirror(
    workdir: Path,
    upstream: str,
    *flags: str,
    open_files: str | None = None,
    port: int | None = None,
) -> MirrorProcess:
    """Start `python -m mirror serve` (under `prlimit --nofile=<open_files>`, "soft:hard", when
    given) on `port` (a free one by default), on the run's store (`tests.support.storage`) unless
    `flags` name one, and wait until `/v2/` answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv: Sequence[str] = [
        sys.executable, "-m", "mirror", "serve", "--listen", f"127.0.0.1:{port}",
        "--upstream", upstream, "--cache-dir", str(workdir / "cache"), *flags,
    ]  # fmt: skip
    if open_files is not None:
        prlimit = shutil.which("prlimit")
        assert prlimit is not None, "prlimit (util-linux) is needed"
        argv = [prlimit, f"--nofile={open_files}", *argv]
    env = storage.current().environ(storage.command_cache_dir(argv))
    log = workdir / "mirror.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent
        )
    running.add(process)
    mirror = MirrorProcess(process, port, log)
    deadline = time.monotonic() + 30
    while True:
        try:
            direct.open(f"http://127.0.0.1:{port}/v2/", timeout=2).close()
            return mirror
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                mirror.stop()
                raise AssertionError(f"mirror did not start:\n{mirror.log_text()}") from None
            time.sleep(0.1)
