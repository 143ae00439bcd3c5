"""`--workers N`: N processes serving one listening socket, restarted if one dies.

The parent binds the socket before forking, so there is never a moment when the port is closed,
and the kernel spreads connections over the workers. Workers share the cache directory (spool
files are locked, renames are atomic) and, with `--redis-url`, the metadata store.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

from mirror import log
from mirror.config import Settings
from mirror.metrics.serving import forget_worker

RESTART_DELAY = 1.0
_PR_SET_PDEATHSIG = 1


def _end_with(supervisor: int) -> None:
    """A worker must not outlive its supervisor: one killed outright cannot pass SIGTERM on,
    so Linux is asked to send it (PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the request above was made
        os._exit(0)


def listening_socket(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def supervise(
    settings: Settings, sock: socket.socket, serve: Callable[[Settings, socket.socket], None]
) -> int:
    """Fork the workers and keep them running until SIGTERM or SIGINT."""
    supervisor = os.getpid()
    workers: dict[int, int] = {}  # pid -> worker number
    stopping = False

    def spawn(number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _end_with(supervisor)
            try:
                serve(settings, sock)
            finally:
                os._exit(0)
        workers[pid] = number

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in workers:
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for number in range(settings.workers):
        spawn(number)
    log.get_logger().info("workers started", workers=settings.workers, pids=sorted(workers))
    while workers:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        number = workers.pop(pid, -1)
        forget_worker(pid)
        if number < 0 or stopping:
            continue
        log.get_logger().error("worker died; restarting", pid=pid, status=status)
        time.sleep(RESTART_DELAY)
        spawn(number)
    sock.close()
    return 0
