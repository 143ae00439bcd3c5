"""`mirror serve`: run the mirror until told to stop."""

from __future__ import annotations

import argparse
import os
import socket

from aiohttp import web

from mirror import log
from mirror.commands import Command
from mirror.config import ConfigError, Settings
from mirror.metrics.serving import check_admin_address, workers_metrics
from mirror.workers import listening_socket, supervise


def _run(settings: Settings, _args: argparse.Namespace) -> int:
    sock = _claim_resources(settings)
    log.configure()
    log.get_logger().info(
        "starting",
        listen=settings.listen,
        upstream=settings.upstream.url,
        cache_dir=str(settings.cache_dir),
        tag_ttl=settings.tag_ttl,
        offline=settings.upstream.offline,
        metadata="redis" if settings.redis_url else "embedded",
        workers=settings.workers,
    )
    if settings.workers > 1:
        with workers_metrics(settings):
            return supervise(settings, sock, serve)
    serve(settings, sock)
    return 0


def _claim_resources(settings: Settings) -> socket.socket:
    """The cache directory and the port, claimed before anything starts, so that a taken port
    or an unwritable directory is one line naming the option, not a traceback."""
    try:
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--cache-dir: cannot create {settings.cache_dir}: {e.strerror}") from e
    if not os.access(settings.cache_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"--cache-dir: {settings.cache_dir} is not writable")
    check_admin_address(settings)
    try:
        return listening_socket(settings)
    except OSError as e:
        raise ConfigError(f"--listen: cannot listen on {settings.listen}: {e.strerror}") from e


def serve(settings: Settings, sock: socket.socket) -> None:
    """Run one server process until it is told to stop."""
    from mirror.app import create_app

    web.run_app(
        create_app(settings),
        sock=sock,
        print=None,
        access_log=None,  # the request middleware writes the one line per request
    )
    log.flush()


COMMAND = Command("serve", "run the mirror", lambda _parser: None, _run)
