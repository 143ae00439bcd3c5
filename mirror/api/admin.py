"""The admin endpoints: `/metrics` (Prometheus text format) and the status page at `/`.

They are served to the address ranges of `admin_allow` only (loopback by default); any other
client gets `403 DENIED`, so an operator who forgot a range sees why at once, where a 404 would
look like a wrong URL. With `--admin-listen` they are served on that address alone, by an app of
their own: the registry's port does not have them at all. Health probes stay on the registry's
port, open to every address, since Kubernetes probes come from the node.

Under `--workers N` every worker serves the admin address (each binds it with SO_REUSEPORT, so
no descriptor has to be handed down) and whichever answers reports every worker's values.

The admin address is held to the limits of the registry's port (`mirror.api.serving`), with a
cap of its own (ADMIN_CONNECTIONS): a scraper and a few browsers need few connections, and
clients that hold many must not take the descriptors the registry's clients need.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from mirror.api import status
from mirror.api.keys import EXPOSITION, SETTINGS
from mirror.api.middlewares import RequestIds, request_middleware
from mirror.api.serving import serve_app
from mirror.config import Settings
from mirror.config.values import AddressRange
from mirror.errors import Denied
from mirror.metrics.summary import summarize
from mirror.workers import bound_socket

# The Prometheus text format every Prometheus version reads (the names need no escaping).
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
ADMIN_CONNECTIONS = 64


def is_allowed(remote: str | None, ranges: tuple[AddressRange, ...]) -> bool:
    """Whether a client at `remote` (an IP address) is in one of `ranges`."""
    if remote is None:
        return False
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # an IPv4 client of a dual-stack socket
    return any(address in network for network in ranges)


def _check(request: web.Request) -> None:
    if not is_allowed(request.remote, request.app[SETTINGS].admin_allow):
        raise Denied(
            f"{request.path} is not served to {request.remote}: its address is not in admin_allow"
        )


async def metrics(request: web.Request) -> web.Response:
    _check(request)
    body = await request.app[EXPOSITION].text()
    return web.Response(body=body, headers={"Content-Type": TEXT_FORMAT})


async def status_page(request: web.Request) -> web.Response:
    _check(request)
    exposition = request.app[EXPOSITION]
    names = [upstream.name for upstream in request.app[SETTINGS].upstreams]
    summary = summarize(await exposition.collect(), names)
    page = status.render(summary, await exposition.activity())
    return web.Response(body=page.encode(), headers=status.HEADERS)


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/", status_page)
    app.router.add_get("/metrics", metrics)


@asynccontextmanager
async def admin_listener(
    main: web.Application, settings: Settings, address: tuple[str, int]
) -> AsyncIterator[None]:
    """Serve the admin endpoints on `address` (`--admin-listen`), with the main app's state,
    for as long as the block runs."""
    app = web.Application(middlewares=[request_middleware(RequestIds())])
    app[SETTINGS] = settings
    app[EXPOSITION] = main[EXPOSITION]
    add_admin_routes(app)
    host, port = address
    with bound_socket(host, port, reuse_port=True, backlog=128) as sock:
        async with serve_app(
            app,
            sock,
            limit=ADMIN_CONNECTIONS,
            send_timeout=settings.send_timeout,
            shutdown_grace=settings.shutdown_grace,
            settle=0,
        ):
            yield
