"""Ready answers before routing: a hot manifest (see `mirror.api.hot`) is answered as soon as
its request is parsed, without the application's routing, middleware chain and handler, which
cost such a hit more than half of its time. The answer, its headers, its log line and its count
in the metrics are those the full path gives; every other request takes the full path.

Only a server without client logins or access rules takes this path: who may read a repository
is decided on the full path, by the auth middleware.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web

from mirror import log
from mirror.api.connections import Connections
from mirror.api.keys import HOT_ANSWERS, METRICS, REQUEST_IDS, SETTINGS, UPKEEP
from mirror.api.middlewares import log_request, send

_READS = frozenset(("GET", "HEAD"))
# What an aiohttp server calls with each parsed request.
ServerHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def ready_first(
    app: web.Application, handler: ServerHandler, connections: Connections | None = None
) -> ServerHandler:
    """`handler` (the application's) behind the ready answers of `app`, which must be set up
    (its services started); `handler` itself when the settings ask for client auth."""
    settings = app[SETTINGS]
    if settings.htpasswd is not None or settings.access:
        return handler
    hot, access, ids = app[HOT_ANSWERS], app[UPKEEP].access, app[REQUEST_IDS]
    metrics = app.get(METRICS)
    observe = metrics.observe if metrics is not None else None

    async def answer(base: web.BaseRequest) -> web.StreamResponse:
        # The application's runner made the server, with the application's request factory.
        request = cast(web.Request, base)
        if request.method not in _READS or (ready := hot.get(hot.key(request))) is None:
            return await handler(request)
        facts = log.begin_request(ids.next())
        started = time.perf_counter()
        response = ready.serve(access)
        if connections is None:
            complete = await send(request, response)
        else:
            connections.busy(request.protocol)
            try:
                complete = await send(request, response)
            finally:
                connections.rested(request.protocol)
        log_request(request, response, facts, started, complete, observe, "manifest")
        return response

    return answer
