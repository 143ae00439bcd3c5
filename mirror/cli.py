"""The `mirror` command: `mirror serve [options]`."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence

from aiohttp import web

from mirror import __version__, log
from mirror.config import ConfigError, Settings, load_settings
from mirror.config.options import add_flags
from mirror.workers import listening_socket, supervise


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mirror", description="Pull-through registry mirror.")
    parser.add_argument("--version", action="version", version=f"mirror {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the mirror")
    serve.add_argument("--config", metavar="FILE.toml", help="TOML settings file (MIRROR_CONFIG)")
    add_flags(serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    try:
        settings = load_settings(args.config, flags)
        sock = _claim_resources(settings)
    except ConfigError as e:
        print(f"mirror: {e}", file=sys.stderr)
        return 2
    log.configure()
    log.get_logger().info(
        "starting",
        listen=settings.listen,
        upstream=settings.upstream.url,
        cache_dir=str(settings.cache_dir),
        tag_ttl=settings.tag_ttl,
        metadata="redis" if settings.redis_url else "embedded",
        workers=settings.workers,
    )
    if settings.workers > 1:
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
