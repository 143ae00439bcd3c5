"""Real mirror processes, started with the command lines and environments deploy/ gives them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.tools import VENV_BIN
from tests.e2e.daemons import Daemon, http_ok
from tests.support.processes import free_port


@dataclass
class RunningMirror:
    daemon: Daemon
    url: str
    env: dict[str, str]  # the whole environment it runs with

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run a command beside it, in its environment (as `docker exec` would)."""
        return subprocess.run(
            list(argv), env=self.env, capture_output=True, text=True, timeout=60, check=False
        )


StartMirror = Callable[[Sequence[str], Mapping[str, str]], RunningMirror]


@pytest.fixture
def start_mirror(tmp_path: Path) -> Iterator[StartMirror]:
    """Start `argv` (a command line from deploy/) with the environment a file gives it, on a
    free loopback port and a cache under tmp_path (as `docker run -e` would override them)."""
    started: list[Daemon] = []

    def start(argv: Sequence[str], env: Mapping[str, str]) -> RunningMirror:
        port = free_port()
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
        full_env = {
            **inherited,
            **env,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "MIRROR_LISTEN": f"127.0.0.1:{port}",
            "MIRROR_CACHE_DIR": str(tmp_path / f"cache-{len(started)}"),
        }
        daemon = Daemon("mirror", argv, tmp_path / f"mirror-{len(started)}.log", env=full_env)
        started.append(daemon)
        daemon.start()
        url = f"http://127.0.0.1:{port}"
        if not daemon.wait_until(lambda: http_ok(f"{url}/healthz"), timeout=30):
            pytest.fail(daemon.describe_failure())
        return RunningMirror(daemon, url, full_env)

    try:
        yield start
    finally:
        for daemon in started:
            daemon.stop()
