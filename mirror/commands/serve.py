"""`mirror serve`: run the mirror until told to stop."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket

from mirror import log
from mirror.commands import Command
from mirror.config import ConfigError, S3Settings, Settings
from mirror.descriptors import max_connections, raise_open_files_limit
from mirror.errors import StorageUnavailable
from mirror.lifecycle import check_files, serve
from mirror.metrics.serving import check_admin_address, workers_metrics
from mirror.storage.s3.bucket import open_bucket
from mirror.workers import inherited_socket, listening_socket, supervise


def _run(settings: Settings, _args: argparse.Namespace) -> int:
    if (inherited := inherited_socket()) is not None:  # a worker of `--workers N`
        log.configure()
        serve(settings, *inherited)
        return 0
    check_files(settings)
    sock = _claim_resources(settings)
    open_files = raise_open_files_limit()  # before the workers start: they inherit it
    log.configure()
    log.get_logger().info(
        "starting",
        listen=settings.listen,
        upstream=settings.upstream.url,
        cache_dir=str(settings.cache_dir),
        storage=settings.storage.url if settings.storage else "cache_dir",
        tag_ttl=settings.tag_ttl,
        offline=settings.upstream.offline,
        metadata="redis" if settings.redis_url else "embedded",
        peer_url=settings.peer_url,  # set: a replica that fetches each blob once with the others
        workers=settings.workers,
        open_files=open_files,
        max_connections=max_connections(settings),
        send_timeout=settings.send_timeout,
    )
    if settings.workers > 1:
        with workers_metrics(settings):
            return supervise(settings, sock)
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
    try:
        sock = listening_socket(settings)
    except OSError as e:
        raise ConfigError(f"--listen: cannot listen on {settings.listen}: {e.strerror}") from e
    try:
        check_admin_address(settings)  # after the main port is taken: it may be the one in use
        _check_storage(settings)
    except ConfigError:
        sock.close()
        raise
    return sock


def _check_storage(settings: Settings) -> None:
    """Open the bucket's client once (it sends nothing): an SDK setting that stops it, such as
    an AWS_PROFILE naming no profile, is one line here rather than a traceback per worker."""
    if settings.storage is None:
        return

    async def try_open(storage: S3Settings) -> None:
        async with open_bucket(storage):
            pass

    try:
        asyncio.run(try_open(settings.storage))
    except StorageUnavailable as e:
        raise ConfigError(f"--storage: {e.message}") from None


COMMAND = Command("serve", "run the mirror", lambda _parser: None, _run)
