"""Ready answers before the application: a hot manifest (see `mirror.api.hot`) is answered
without the application's routing, middleware chain and handler, and where the request is plain
enough (`mirror.api.request_head`) without aiohttp's request machinery either, straight from the
connection's bytes (`mirror.api.front`). Those cost a hit most of its time. The answer, its
headers, its log line and its count in the metrics are those the full path gives; every other
request takes the full path.

Only a server without client logins or access rules has ready answers: who may read a
repository is decided on the full path, by the auth middleware.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from typing import cast

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from mirror import log
from mirror.api.connections import ServerHandler
from mirror.api.keys import HOT_ANSWERS, METRICS, REQUEST_IDS, SETTINGS, UPKEEP
from mirror.api.middlewares import log_line, log_request, send
from mirror.api.request_head import RequestHead
from mirror.log import RequestFacts

_READS = frozenset(("GET", "HEAD"))


class ReadyAnswers:
    """The ready answers of one app (one process), which must be set up (its services
    started)."""

    def __init__(self, app: web.Application) -> None:
        self._hot, self._access, self._ids = app[HOT_ANSWERS], app[UPKEEP].access, app[REQUEST_IDS]
        self._metrics = app.get(METRICS)
        self._stamp = (0, b"")  # the second of the last answer, and its Date and Server fields

    @classmethod
    def of(cls, app: web.Application) -> ReadyAnswers | None:
        """The app's ready answers; None when its settings ask for client auth."""
        settings = app[SETTINGS]
        if settings.htpasswd is not None or settings.access:
            return None
        return cls(app)

    def before(self, handler: ServerHandler) -> ServerHandler:
        """`handler` (the application's) behind the ready answers."""
        hot, access, ids = self._hot, self._access, self._ids
        observe = self._metrics.observe if self._metrics is not None else None

        async def answer(base: web.BaseRequest) -> web.StreamResponse:
            # The application's runner made the server, with the application's request factory.
            request = cast(web.Request, base)
            if (
                request.method not in _READS
                or "Expect" in request.headers  # answered (100 or 417) by the application
                or "If-None-Match" in request.headers  # may be a 304: the application's
                or (ready := hot.get(hot.key(request))) is None
            ):
                return await handler(request)
            facts = log.begin_request(ids.next())
            started = time.perf_counter()
            response = ready.serve(access)
            complete = await send(request, response)
            log_request(request, response, facts, started, complete, observe, "manifest")
            return response

        return answer

    def write(self, head: RequestHead, transport: asyncio.WriteTransport) -> bool:
        """Answer the request `head` on `transport` if its answer is ready; False when it is
        not, and the request is the full path's."""
        ready = None if head.conditional else self._hot.get(head.key)
        if ready is None:
            return False
        started = time.perf_counter()
        facts = RequestFacts(self._ids.next(), "hit", ready.upstream, ready.repo)
        ready.record(self._access)
        head_only = head.method == "HEAD"
        close = b"Connection: close\r\n" if head.close else b""
        fields = b"".join((ready.wire_head, self._date_and_server(), close, b"\r\n"))
        transport.write(fields if head_only else fields + ready.body)
        complete = not transport.is_closing()
        sent = 0 if head_only or not complete else len(ready.body)
        if self._metrics is not None:
            self._metrics.count("manifest", head.method, 200, facts, sent)
        log_line(head.method, head.path, 200, sent, complete, facts, started)
        return True

    def _date_and_server(self) -> bytes:
        """The fields aiohttp adds to every answer, made once a second."""
        now = int(time.time())
        if now != self._stamp[0]:
            date = formatdate(now, usegmt=True)
            self._stamp = (now, f"Date: {date}\r\nServer: {SERVER_SOFTWARE}\r\n".encode())
        return self._stamp[1]
