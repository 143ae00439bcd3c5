"""The one middleware every request passes: OCI error rendering and the request's log line."""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from mirror import log
from mirror.errors import (
    Busy,
    MirrorError,
    NameUnknown,
    Unsupported,
    error_body,
    out_of_descriptors,
)
from mirror.log import RequestFacts

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Told of each answered request as it is logged: (request, status, facts, body bytes sent, and
# what it asked for when routing did not say).
Observer = Callable[[web.Request, int, RequestFacts, int, str | None], None]
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
# What the log line of a request says whose client left before it was answered (nginx's
# "client closed request"): no answer went out, and the mirror was not at fault.
CLIENT_GONE = 499


def error_response(error: MirrorError) -> web.Response:
    body = json.dumps(error_body([error])).encode()
    # Built by hand: json_response would append "; charset=utf-8" to the Content-Type.
    headers = {"Content-Type": "application/json", **API_VERSION, **error.headers}
    return web.Response(status=error.status, body=body, headers=headers)


def _from_http(exc: web.HTTPException, request: web.Request) -> MirrorError:
    """aiohttp's own refusals (no route, wrong method) in OCI terms."""
    if exc.status == 405 or request.method not in ("GET", "HEAD"):
        return Unsupported(
            f"{request.method} is not supported: this registry is a read-only mirror"
        )
    return NameUnknown(f"no such endpoint: {request.path[:200]}")


def _unexpected(request: web.Request) -> web.Response:
    """A defect: logged with its traceback, answered as a bare internal error."""
    log.get_logger().exception("unexpected error", path=request.path[:500])
    return error_response(MirrorError("internal error"))


def _client_left(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def abort(request: web.Request) -> None:
    """Cut the connection: after headers went out, this is the only honest way to fail."""
    if request.transport is not None:
        request.transport.abort()


class RequestIds:
    """One process's request ids: a process prefix and a counter, unique across the workers and
    restarts of a host and free to make."""

    def __init__(self) -> None:
        self._prefix = f"{os.getpid():x}{int(time.time()) & 0xFFFF:04x}"
        self._ids = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._ids):x}"


def request_middleware(ids: RequestIds, observe: Observer | None = None) -> Middleware:
    """The middleware of one app (one process); `observe` (the metrics) counts what each line
    logs."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await _handle(request, handler, ids.next(), observe)

    return middleware


async def _handle(
    request: web.Request, handler: Handler, request_id: str, observe: Observer | None
) -> web.StreamResponse:
    """Renders errors, finishes the response and logs one line with what it cost."""
    facts = log.begin_request(request_id)
    started = time.perf_counter()
    try:
        response = await handler(request)
    except MirrorError as e:
        response = error_response(e)
    except web.HTTPException as e:
        response = error_response(_from_http(e, request))
    except OSError as e:
        if out_of_descriptors(e):
            # Whatever needed a descriptor (a cached file, a spool file, a lock, a connection
            # upstream) will get one once other requests finish: refuse, do not fail.
            log.warn_once("out of file descriptors; answering 503", error=e.strerror)
            response = error_response(Busy("the mirror is out of file descriptors"))
        elif isinstance(e, ConnectionResetError) and _client_left(request):
            response = web.Response(status=CLIENT_GONE)  # `while_there` (mirror.api.responses)
        else:
            response = _unexpected(request)
    except Exception:
        response = _unexpected(request)
    if request.writer.output_size > 0 and not response.prepared:
        # The handler failed after it started its own response: no error body can follow.
        abort(request)
        complete = False
    else:
        if not response.prepared:
            response.headers.update(API_VERSION)
        complete = await send(request, response)
    log_request(request, response, facts, started, complete, observe)
    return response


async def send(request: web.Request, response: web.StreamResponse) -> bool:
    """Finish the response here rather than in aiohttp, so the log line knows its bytes and
    duration: whether the client received all of it."""
    try:
        await response.prepare(request)
        await response.write_eof()
    except (ConnectionError, OSError):
        return False  # the client went away
    transport = request.transport
    return transport is not None and not transport.is_closing()


def log_request(
    request: web.Request,
    response: web.StreamResponse,
    facts: RequestFacts,
    started: float,
    complete: bool,
    observe: Observer | None,
    kind: str | None = None,
) -> None:
    """The request's one log line, and its count in the metrics (`kind`, when the request
    was answered before routing could tell it)."""
    if request.method == "HEAD":
        sent = 0
    elif facts.streamed is not None:
        sent = facts.streamed
    else:
        sent = (response.content_length or 0) if complete else 0
    if observe is not None:
        observe(request, response.status, facts, sent, kind)
    log_line(request.method, request.path, response.status, sent, complete, facts, started)


def log_line(
    method: str,
    path: str,
    status: int,
    sent: int,
    complete: bool,
    facts: RequestFacts,
    started: float,
) -> None:
    """The request's one log line."""
    log.request_line(
        method=method,
        path=path[:500],
        status=status,
        bytes=sent,
        complete=complete,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
        cache=facts.cache,
        upstream=facts.upstream,
        upstream_status=facts.upstream_status,
        request_id=facts.request_id,
    )
