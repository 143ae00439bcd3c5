"""Long-running servers for the end-to-end suite: started on loopback, stopped by their own PID.

Every daemon writes its output to a log file under the session's temp dir, so a failure can quote
what the server said and the suite never depends on a pipe being drained.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import storage
from tests.support.processes import die_with_parent, free_port

# CI sets this so a client that is missing or cannot start fails the run instead of skipping.
REQUIRED_ENV = "MIRROR_E2E_REQUIRED"


def clients_required() -> bool:
    """True when the environment demands that every client runs (CI)."""
    return os.environ.get(REQUIRED_ENV) == "1"


def unavailable(reason: str) -> None:
    """Skip loudly, or fail when the clients are required."""
    if clients_required():
        pytest.fail(f"{reason} ({REQUIRED_ENV}=1, so this is a failure, not a skip)")
    pytest.skip(f"E2E CLIENT UNAVAILABLE: {reason}")


def require_binary(name: str) -> str:
    """The absolute path of `name`, or skip/fail when it is not installed."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        unavailable(f"`{name}` is not installed (Debian: see tests/system-deps.sh)")
    assert path is not None
    return path


def require_root(what: str) -> None:
    """Skip/fail unless running as root, which dockerd and containerd need."""
    if os.geteuid() != 0:
        unavailable(f"{what} needs root to start")


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for failure messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Daemon:
    """A server process started in its own session, logging to `log`."""

    name: str
    argv: Sequence[str]
    log: Path
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        """Launch the process; its output goes to the log file."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_until(self, ready: Callable[[], bool], timeout: float = 30.0) -> bool:
        """Poll `ready` until it holds; False if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                return False
            try:
                if ready():
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM this process (by PID), then SIGKILL it if it does not exit in time."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)

    def describe_failure(self) -> str:
        return f"{self.name} did not start; last log lines of {self.log}:\n{tail(self.log)}"


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    """True when GET `url` answers 200 (over TLS trusting `context`'s CAs, for https)."""
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except urllib.error.URLError:
        return False


@dataclass
class MirrorServer:
    """The mirror under test, run through its real command line as a subprocess."""

    daemon: Daemon
    port: int
    cache_dir: Path
    ca_file: Path | None = None  # the CA of its certificate, when it serves HTTPS

    @property
    def url(self) -> str:
        scheme = "https" if self.ca_file else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.daemon.pid

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting the server's CA (None for plain HTTP)."""
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls,
        workdir: Path,
        upstream_url: str,
        *,
        tag_ttl: float,
        cache_dir: Path | None = None,
        extra_args: Sequence[str] = (),
        ca_file: Path | None = None,
    ) -> MirrorServer:
        """Start `python -m mirror serve` against `upstream_url` and wait until it answers;
        the cache is `workdir/cache` unless another directory (shared with another) is given.
        With `ca_file`, `extra_args` set up TLS and the server is asked over HTTPS."""
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "mirror",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            upstream_url,
            "--cache-dir",
            str(cache_dir or workdir / "cache"),
            "--tag-ttl",
            str(tag_ttl),
            *extra_args,
        ]
        # On the run's store (a bucket behind the directory under `pytest --storage=s3`).
        env = storage.current().environ(storage.command_cache_dir(argv))
        daemon = Daemon("mirror", argv, workdir / "mirror.log", env=env)
        server = cls(daemon, port, cache_dir or workdir / "cache", ca_file)
        daemon.start()
        context = server.ssl_context()
        # /healthz: /v2/ may demand a login.
        if not daemon.wait_until(lambda: http_ok(f"{server.url}/healthz", context), timeout=30):
            failure = daemon.describe_failure()
            daemon.stop()
            pytest.fail(failure)
        return server

    def stop(self) -> None:
        self.daemon.stop()

    def log_text(self) -> str:
        return self.daemon.log.read_text(errors="replace")

    def log_size(self) -> int:
        """A mark in the log; `entries(since=mark)` returns only what came after it."""
        return self.daemon.log.stat().st_size

    def _settled(self) -> None:
        """Wait until the mirror has written out its request lines (it batches them within
        50 ms): the log stops growing for a little longer than that."""
        size = self.log_size()
        for _ in range(20):
            time.sleep(0.12)
            if (now := self.log_size()) == size:
                return
            size = now

    def entries(self, since: int = 0) -> list[dict[str, Any]]:
        """The structured (JSON) log lines written after byte offset `since`."""
        self._settled()
        with self.daemon.log.open("rb") as f:
            f.seek(since)
            raw = f.read().decode(errors="replace")
        found = []
        for line in raw.splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    def log_since(self, since: int) -> str:
        self._settled()
        with self.daemon.log.open("rb") as f:
            f.seek(since)
            return f.read().decode(errors="replace")
