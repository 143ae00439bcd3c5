"""A real `redis-server` on a free loopback port, which tests can kill and restart."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.processes import die_with_parent, free_port


class RedisServer:
    """One redis-server process with no persistence: a restart comes back empty."""

    def __init__(self, workdir: Path, options: Sequence[str] = ()) -> None:
        """`options`: more `--name value` arguments of redis-server."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.options = tuple(options)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = workdir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self._process is not None:
            return
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    # A server that wants a password answers, if only to refuse.
                    if sock.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def command(self) -> list[str]:
        """The redis-server command line."""
        return [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            *self.options,
        ]

    def stop(self) -> None:
        """Kill it outright, as a crash would."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()
