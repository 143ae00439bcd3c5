"""`mirror health`: ask a running server on this host whether it is live (or ready).

Slim container images have no curl; this is their `HEALTHCHECK`. It reads the same settings as
`serve` (flags, `MIRROR_*`, `--config`), so it asks the port the server listens on without
anyone writing that port down twice.
"""

from __future__ import annotations

import argparse
import ssl
import sys
import urllib.error
import urllib.request

from yarl import URL

from mirror.commands import Command, CommandError
from mirror.config import ConfigError, Settings
from mirror.config.values import seconds

# A server listening on every address is asked on loopback.
_LOCAL = {"0.0.0.0": "127.0.0.1", "::": "::1"}
# Loopback needs no proxy, whatever HTTP_PROXY says. Over TLS the certificate is not checked:
# it names the host clients know, not loopback, and this only asks the local process.
_unverified = ssl.create_default_context()
_unverified.check_hostname = False
_unverified.verify_mode = ssl.CERT_NONE
_direct = urllib.request.build_opener(
    urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=_unverified)
)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ready", action="store_true", help="ask /readyz (can it take traffic) not /healthz"
    )
    parser.add_argument(
        "--timeout", type=_timeout, default=5.0, metavar="SECONDS", help="default 5"
    )


def _timeout(text: str) -> float:
    try:
        return seconds("--timeout", text)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None


def _probe_url(settings: Settings, *, ready: bool) -> str:
    host = _LOCAL.get(settings.host, settings.host)
    path = "/readyz" if ready else "/healthz"
    scheme = "https" if settings.tls_cert else "http"
    return str(URL.build(scheme=scheme, host=host, port=settings.port, path=path))


def _run(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 on a 2xx answer and 1 otherwise (Docker's healthy and unhealthy); the body,
    which says why, goes to stdout, where `docker inspect` shows it."""
    url = _probe_url(settings, ready=args.ready)
    try:
        with _direct.open(url, timeout=args.timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise CommandError(f"{url}: {reason}") from None
    sys.stdout.write(body.decode(errors="replace").strip() + "\n")
    return 0 if 200 <= status < 300 else 1


COMMAND = Command("health", "ask the local server's /healthz or /readyz", _add_arguments, _run)
