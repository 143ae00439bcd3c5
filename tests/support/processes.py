"""Helpers for the servers the tests and the benchmark start: free ports, and children that
never outlive the process that started them."""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import signal
import socket
import subprocess
import urllib.request

_PR_SET_PDEATHSIG = 1
# Loopback needs no proxy, whatever the environment says.
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# Everything started and not yet stopped: killed at exit as a last resort (an interrupted run
# may skip fixture teardown).
running: set[subprocess.Popen[bytes]] = set()


def _kill_leftovers() -> None:
    for process in list(running):
        process.kill()
        process.wait()


atexit.register(_kill_leftovers)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """(preexec_fn) Ask Linux to SIGTERM the child when its parent dies, even by SIGKILL."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def killed_with_parent() -> None:
    """(preexec_fn) SIGKILL the child when its parent dies: for servers that may linger on
    SIGTERM (weed's graceful stop can hang)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
