"""`--workers N`: N processes serving one listening socket, restarted if one dies, replaced one
by one on SIGHUP.

The supervisor binds the socket before starting anything, so there is never a moment when the port
is closed, and the workers share out the connections (`mirror.api.listener`). Each worker is a fresh
run of the same command line that inherits the socket, so a worker started on SIGHUP runs the code
and reads the settings that are on disk then. A rolling restart starts a new worker, waits until it
accepts connections, and only then asks an old one to stop (it drains, see `mirror.lifecycle`): at
every moment at least N processes accept, and no connection is refused. A new worker that fails to
start (a broken settings file) ends the rolling restart and leaves the running workers as they are.

Workers share the cache directory (spool files are locked, renames are atomic) and, with
`--redis-url`, the metadata store.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from mirror import log
from mirror.config import Settings
from mirror.metrics.serving import SLOT_ENV, forget_worker

RESTART_DELAY = 1.0
READY_TIMEOUT = 60.0  # for a new worker to accept connections during a rolling restart
KILL_MARGIN = 10.0  # past the shutdown grace, a worker still running is killed
# Set for workers only: "<listening socket fd>,<ready pipe fd>".
WORKER_FDS = "MIRROR_WORKER_FDS"
_PR_SET_PDEATHSIG = 1


def _end_with(supervisor: int) -> None:
    """A worker must not outlive its supervisor: one killed outright cannot pass SIGTERM on,
    so Linux is asked to send it (PR_SET_PDEATHSIG, which lasts across exec)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the request above was made
        os._exit(0)


def listening_socket(settings: Settings) -> socket.socket:
    return bound_socket(settings.host, settings.port)


def bound_socket(
    host: str, port: int, *, reuse_port: bool = False, backlog: int = 1024
) -> socket.socket:
    """A listening TCP socket on `host` (an IPv6 one when it has a colon); `reuse_port`: one
    of several processes' sockets on the same port (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def inherited_socket() -> tuple[socket.socket, Callable[[], None]] | None:
    """In a worker: the supervisor's listening socket, and the call that tells the supervisor
    this worker accepts connections. None in any other process."""
    value = os.environ.pop(WORKER_FDS, None)
    if value is None:
        return None
    sock_fd, ready_fd = (int(fd) for fd in value.split(","))

    def ready() -> None:
        with contextlib.suppress(OSError):
            os.write(ready_fd, b"1")
        os.close(ready_fd)

    return socket.socket(fileno=sock_fd), ready


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    ready_fd: int  # read end of the pipe the worker writes one byte to once it accepts
    slot: int  # no other running worker's: its metrics are counted in files of that name


class Supervisor:
    """Starts the workers and keeps them running until SIGTERM or SIGINT."""

    def __init__(self, settings: Settings, sock: socket.socket) -> None:
        self._sock = sock
        self._count = settings.workers
        self._grace = settings.shutdown_grace
        # The command line this process was started with, run again by each worker.
        self._command = [sys.executable, *sys.orig_argv[1:]]
        self._workers: dict[int, _Worker] = {}
        self._retiring: dict[int, _Worker] = {}
        self._stopping = False
        self._restart = False
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def run(self) -> int:
        signal.set_wakeup_fd(self._wakeup_w)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the loop up
        started = [self._spawn() for _ in range(self._count)]
        log.get_logger().info("workers started", workers=self._count, pids=self.pids)
        if all(self._until_ready(worker) for worker in started):
            # Every worker read its settings and accepts: from here on the settings file may
            # change without affecting them (until SIGHUP).
            log.get_logger().info("workers ready", pids=self.pids)
        while not self._stopping:
            self._reap()
            if self._restart:
                self._restart = False
                self._roll()
            self._wait([], timeout=1.0)
        self._stop_all()
        return 0

    @property
    def pids(self) -> list[int]:
        return sorted(self._workers)

    def _on_stop(self, _signum: int, _frame: object) -> None:
        self._stopping = True

    def _on_hup(self, _signum: int, _frame: object) -> None:
        self._restart = True

    def _spawn(self) -> _Worker:
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        supervisor = os.getpid()
        slot = self._free_slot()
        env = {**os.environ, WORKER_FDS: f"{self._sock.fileno()},{ready_w}", SLOT_ENV: str(slot)}
        try:
            process = subprocess.Popen(
                self._command,
                env=env,
                stdin=subprocess.DEVNULL,
                pass_fds=(self._sock.fileno(), ready_w),
                preexec_fn=lambda: _end_with(supervisor),
            )
        finally:
            os.close(ready_w)
        worker = _Worker(process, ready_r, slot)
        self._workers[process.pid] = worker
        return worker

    def _free_slot(self) -> int:
        """The lowest slot no worker holds: a worker that has exited (and been forgotten) gives
        its slot to the next, so the slots are as many as workers ever ran at once."""
        taken = {worker.slot for worker in (*self._workers.values(), *self._retiring.values())}
        return next(slot for slot in itertools.count() if slot not in taken)

    def _wait(self, fds: list[int], timeout: float) -> list[int]:
        """Sleep until a signal arrives, one of `fds` is readable, or `timeout` passes."""
        try:
            readable, _, _ = select.select([self._wakeup_r, *fds], [], [], timeout)
        except InterruptedError:
            return []
        if self._wakeup_r in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wakeup_r, 512):
                    pass
        return [fd for fd in readable if fd != self._wakeup_r]

    def _reap(self) -> None:
        for pid, worker in list(self._retiring.items()):
            if worker.process.poll() is not None:
                del self._retiring[pid]
                os.close(worker.ready_fd)
                forget_worker(worker.slot)
        for pid, worker in list(self._workers.items()):
            status = worker.process.poll()
            if status is None:
                continue
            del self._workers[pid]
            os.close(worker.ready_fd)
            forget_worker(worker.slot)
            if self._stopping:
                continue
            log.get_logger().error("worker died; restarting", pid=pid, status=status)
            time.sleep(RESTART_DELAY)
            self._spawn()

    def _roll(self) -> None:
        """Replace every worker, one at a time, each only once its successor accepts."""
        old = list(self._workers.values())
        log.get_logger().info("restarting workers one by one", pids=self.pids)
        for worker in old:
            new = self._spawn()
            if not self._until_ready(new):
                if new.process.poll() is None:
                    new.process.kill()
                del self._workers[new.process.pid]
                os.close(new.ready_fd)
                log.get_logger().error(
                    "a new worker did not start; the running workers stay",
                    pid=new.process.pid,
                    status=new.process.wait(),
                )
                forget_worker(new.slot)
                return
            del self._workers[worker.process.pid]
            self._retiring[worker.process.pid] = worker
            worker.process.send_signal(signal.SIGTERM)
        log.get_logger().info("workers restarted", pids=self.pids)

    def _until_ready(self, worker: _Worker) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._stopping and time.monotonic() < deadline:
            if worker.ready_fd in self._wait([worker.ready_fd], deadline - time.monotonic()):
                return os.read(worker.ready_fd, 1) == b"1"  # b"" when it died first
        return False

    def _stop_all(self) -> None:
        """SIGTERM every worker and wait for them to drain; kill what outlives the grace."""
        self._sock.close()  # once the workers let go of it too, connections are refused
        everyone = {**self._workers, **self._retiring}
        for worker in everyone.values():
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace + KILL_MARGIN
        while any(w.process.poll() is None for w in everyone.values()):
            if time.monotonic() >= deadline:
                for worker in everyone.values():
                    if worker.process.poll() is None:
                        log.get_logger().error(
                            "worker outlived the grace; killed", pid=worker.process.pid
                        )
                        worker.process.kill()
                        worker.process.wait()
                break
            self._wait([], timeout=0.2)
        for worker in everyone.values():
            with contextlib.suppress(OSError):
                os.close(worker.ready_fd)


def supervise(settings: Settings, sock: socket.socket) -> int:
    """Run the workers until SIGTERM or SIGINT; exits 0 once they all have."""
    return Supervisor(settings, sock).run()
