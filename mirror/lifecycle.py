"""One server process from start to exit: serving (over TLS when configured), reloading on
SIGHUP, draining on SIGTERM.

On SIGTERM (or SIGINT) the process stops accepting at once (with `--workers N` the other
processes keep the port; alone, new connections are refused), lets connections accepted a
moment earlier send their request, closes idle keep-alive connections, and gives the responses
in flight up to `--shutdown-grace` seconds to finish. Blob downloads then stop, except those
already verified, which are committed to the cache before the process exits with status 0.

SIGHUP re-reads the TLS certificate for the connections to come; open connections are not
touched.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable

from mirror import log
from mirror.auth.htpasswd import HtpasswdFile
from mirror.config import Settings
from mirror.tls import ServerTls


def check_files(settings: Settings) -> None:
    """The files the server reads, checked before it starts: a ConfigError names the option."""
    ServerTls.of(settings)
    if settings.htpasswd is not None:
        HtpasswdFile(settings.htpasswd)


def serve(settings: Settings, sock: socket.socket, ready: Callable[[], None] | None = None) -> None:
    """Serve on `sock` until SIGTERM or SIGINT; `ready` is called once connections are taken."""
    asyncio.run(_serve(settings, sock, ready))
    log.flush()


async def _serve(settings: Settings, sock: socket.socket, ready: Callable[[], None] | None) -> None:
    from mirror.server import serving

    tls = ServerTls.of(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, tls)
    async with serving(settings, sock, tls.context if tls else None):
        if ready is not None:
            ready()
        await stop.wait()
        log.get_logger().info("stopping", pid=os.getpid(), grace=settings.shutdown_grace)
    log.get_logger().info("stopped", pid=os.getpid())


def _reload(tls: ServerTls | None) -> None:
    if tls is None:
        log.get_logger().info("SIGHUP: no TLS certificate to reload")
        return
    tls.reload()
