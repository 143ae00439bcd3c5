"""In-process fake upstreams that misbehave on purpose: stall, die, lie, throttle, hang, challenge,
never end.

A `FakeUpstream` answers `/v2/` and whatever paths a test scripts with `route()`, and records every
request it receives (method, path with query, headers), so a test can assert both what the client
saw and what the mirror asked upstream. Each behaviour below is a small handler factory.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from tests.support.images import sha256_digest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class SeenRequest:
    """One request as the fake upstream received it."""

    method: str
    path: str  # path and query, exactly as sent
    headers: CIMultiDictProxy[str]
    connection: object = None  # the client's address and port: one per TCP connection


@dataclass
class FakeUpstream:
    """A scriptable registry; `url` and `host` are set once its server is listening."""

    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[SeenRequest] = field(default_factory=list)
    url: str = ""
    host: str = ""
    # Set at teardown so hanging handlers return and the server can close promptly.
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def route(self, path: str, handler: Handler) -> None:
        """Answer requests for exactly `path` (any method) with `handler`."""
        self.routes[path] = handler

    def seen(self, method: str | None = None, path: str | None = None) -> list[SeenRequest]:
        """The recorded requests, optionally only those with this method and/or path prefix."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method)
            and (path is None or r.path.split("?", 1)[0] == path)
        ]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        headers = CIMultiDictProxy(CIMultiDict(request.headers))
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(SeenRequest(request.method, request.path_qs, headers, peer))
        handler = self.routes.get(request.path)
        if handler is None:
            if request.path == "/v2/":
                return _api_root()
            return error(404, "NAME_UNKNOWN" if "/manifests/" in request.path else "BLOB_UNKNOWN")
        return await handler(request)


# What the `make_fake_upstream` fixture gives: start a fake upstream (on a loopback address).
FakeFactory = Callable[..., Awaitable[FakeUpstream]]


def _api_root() -> web.Response:
    return web.Response(
        body=b"{}",
        headers={
            "Content-Type": "application/json",
            "Docker-Distribution-API-Version": "registry/2.0",
        },
    )


async def api_root(request: web.Request) -> web.StreamResponse:
    """`/v2/` as a healthy registry answers it; wrap it (e.g. in `basic_auth`) to protect it."""
    return _api_root()


def error(status: int, code: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """An OCI error answer."""
    body = json.dumps({"errors": [{"code": code, "message": f"fake upstream says {code}"}]})
    return web.Response(
        status=status,
        body=body.encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def content(data: bytes, media_type: str = "application/octet-stream") -> Handler:
    """Serve `data` faithfully (GET and HEAD), as a healthy registry would."""
    digest = sha256_digest(data)

    async def handler(request: web.Request) -> web.StreamResponse:
        headers = {"Content-Type": media_type, "Docker-Content-Digest": digest}
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return web.Response(headers=headers)
        return web.Response(body=data, headers=headers)

    return handler


def status(code: int, oci_code: str, headers: Mapping[str, str] | None = None) -> Handler:
    """Always answer `code` with an OCI error body (429 TOOMANYREQUESTS, 503 UNAVAILABLE, ...)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return error(code, oci_code, headers)

    return handler


@dataclass
class Stall:
    """Controls a slow blob: the first bytes go out, the rest waits until `resume` is set."""

    resume: asyncio.Event = field(default_factory=asyncio.Event)
    first_sent: asyncio.Event = field(default_factory=asyncio.Event)
    finished: bool = False


def slow_content(data: bytes, stall: Stall, first: int = 1024) -> Handler:
    """Send `first` bytes of `data`, then wait for `stall.resume` before sending the rest."""
    digest = sha256_digest(data)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}
        )
        response.content_length = len(data)
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        await response.write(data[:first])
        stall.first_sent.set()
        await stall.resume.wait()
        await response.write(data[first:])
        await response.write_eof()
        stall.finished = True
        return response

    return handler


def stalled_resumable(data: bytes, stall: Stall, first: int = 1024) -> Handler:
    """Like `slow_content` for a whole GET (its `first` bytes, then a wait for `stall.resume`),
    but a `Range: bytes=N-` request is answered at once with 206 and the rest."""
    digest = sha256_digest(data)
    stalled = slow_content(data, stall, first)

    async def handler(request: web.Request) -> web.StreamResponse:
        offset = request.http_range.start or 0
        if not offset:
            return await stalled(request)
        headers = {
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": digest,
            "Content-Range": f"bytes {offset}-{len(data) - 1}/{len(data)}",
        }
        return web.Response(status=206, body=data[offset:], headers=headers)

    return handler


def dying_content(data: bytes, cut: int | None = None) -> Handler:
    """Announce the full Content-Length, send only `cut` bytes, then drop the connection."""
    digest = sha256_digest(data)
    cut = len(data) // 2 if cut is None else cut

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}
        )
        response.content_length = len(data)
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        await response.write(data[:cut])
        await asyncio.sleep(0.05)  # let the partial bytes leave before the connection goes
        assert request.transport is not None
        request.transport.abort()
        return response

    return handler


def lying_content(data: bytes, claimed_digest: str) -> Handler:
    """Serve `data` complete and well-formed, but under a digest it does not have."""

    async def handler(request: web.Request) -> web.StreamResponse:
        headers = {
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": claimed_digest,
        }
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return web.Response(headers=headers)
        return web.Response(body=data, headers=headers)

    return handler


def hanging(upstream: FakeUpstream) -> Handler:
    """Accept the request and never answer (until the fake upstream is torn down)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await upstream.release.wait()
        return error(503, "UNAVAILABLE")

    return handler


def redirect(location: str, status_code: int = 307) -> Handler:
    """Answer with a redirect to `location` (another host, like Docker Hub's CDN)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status_code, headers={"Location": location})

    return handler


def basic_auth(username: str, password: str, inner: Handler) -> Handler:
    """Demand HTTP Basic credentials (401 + `WWW-Authenticate: Basic`) before `inner` answers."""
    expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != expected:
            return error(401, "UNAUTHORIZED", {"WWW-Authenticate": 'Basic realm="fake"'})
        return await inner(request)

    return handler


def bearer_auth(realm: str, service: str, token: str, scope: str, inner: Handler) -> Handler:
    """Demand `Authorization: Bearer <token>`, challenging with realm, service and scope."""
    challenge = f'Bearer realm="{realm}",service="{service}",scope="{scope}"'

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {token}":
            return error(401, "UNAUTHORIZED", {"WWW-Authenticate": challenge})
        return await inner(request)

    return handler


def tags_pages(name: str, tags: list[str]) -> Handler:
    """A tag list that paginates with `n` and `last` and a `Link` header, as the spec describes."""

    async def handler(request: web.Request) -> web.StreamResponse:
        ordered = sorted(tags)
        last = request.query.get("last")
        if last is not None:
            ordered = [t for t in ordered if t > last]
        headers = {"Content-Type": "application/json"}
        n_text = request.query.get("n")
        if n_text is not None:
            n = int(n_text)
            if n < len(ordered):
                page = ordered[:n]
                headers["Link"] = f'</v2/{name}/tags/list?n={n}&last={page[-1]}>; rel="next"'
                ordered = page
        body = json.dumps({"name": name, "tags": ordered}).encode()
        return web.Response(body=body, headers=headers)

    return handler


def resumable_content(data: bytes, cut: int) -> Handler:
    """Like a CDN: honours `Range: bytes=N-` with 206, but the first full GET dies after `cut`."""
    digest = sha256_digest(data)
    died = False

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal died
        headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}
        offset = request.http_range.start or 0
        response = web.StreamResponse(status=206 if offset else 200, headers=headers)
        if offset:
            response.headers["Content-Range"] = f"bytes {offset}-{len(data) - 1}/{len(data)}"
        response.content_length = len(data) - offset
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        if not offset and not died:
            died = True
            await response.write(data[:cut])
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.abort()
            return response
        await response.write(data[offset:])
        await response.write_eof()
        return response

    return handler


@dataclass
class RateLimit:
    """Docker Hub's pull accounting, as a test scripts it: what is left, and whether it 429s."""

    limit: int = 100
    remaining: int = 100
    window: int = 21600  # seconds, the `w=` of the RateLimit headers
    throttled: bool = False
    retry_after: int = 60
    gets: int = 0
    heads: int = 0

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": f"{self.limit};w={self.window}",
            "RateLimit-Remaining": f"{max(self.remaining, 0)};w={self.window}",
            "Docker-RateLimit-Source": "127.0.0.1",
        }


def rate_limited(data: bytes, media_type: str, limit: RateLimit) -> Handler:
    """A manifest behind Docker Hub's limits: GETs count (and use up `remaining`), HEADs are free,
    both carry the RateLimit headers; once `limit.throttled`, everything is a 429."""
    digest = sha256_digest(data)

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            limit.heads += 1
        else:
            limit.gets += 1
        if limit.throttled:
            headers = {**limit.headers(), "Retry-After": str(limit.retry_after)}
            headers["RateLimit-Remaining"] = f"0;w={limit.window}"
            return error(429, "TOOMANYREQUESTS", headers)
        if request.method == "GET":
            limit.remaining -= 1  # only a GET is a pull (docs.docker.com, "Docker Hub usage")
        headers = {**limit.headers(), "Content-Type": media_type, "Docker-Content-Digest": digest}
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return web.Response(headers=headers)
        return web.Response(body=data, headers=headers)

    return handler


def token_endpoint(token: str, expires_in: int = 300) -> Handler:
    """A token realm that hands out `token` to anyone (its recorded requests show who asked how)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        body = json.dumps({"token": token, "access_token": token, "expires_in": expires_in})
        return web.Response(body=body.encode(), headers={"Content-Type": "application/json"})

    return handler


# A trickle sends a byte this often: well inside any read timeout a test sets, so only a limit
# on the whole exchange ever stops it.
TRICKLE_INTERVAL = 0.2


def trickling_head(upstream: FakeUpstream) -> Handler:
    """Answer with a status line and headers that never end, one byte every `TRICKLE_INTERVAL`
    (until the client goes away or the fake upstream is torn down)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        assert transport is not None
        for byte in itertools.chain(b"HTTP/1.1 200 OK\r\nX-Filler: ", itertools.repeat(ord("a"))):
            if transport.is_closing() or upstream.release.is_set():
                break
            transport.write(bytes([byte]))
            await asyncio.sleep(TRICKLE_INTERVAL)
        transport.abort()
        return web.Response()  # never sent: the connection is gone

    return handler


def trickling_body(upstream: FakeUpstream, data: bytes, media_type: str) -> Handler:
    """Send the headers at once (HEAD is answered whole), then `data` one byte every
    `TRICKLE_INTERVAL`."""
    digest = sha256_digest(data)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": media_type, "Docker-Content-Digest": digest}
        )
        response.content_length = len(data)
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        for i in range(len(data)):
            if upstream.release.is_set():
                break
            await response.write(data[i : i + 1])
            await asyncio.sleep(TRICKLE_INTERVAL)
        await response.write_eof()
        return response

    return handler


@dataclass
class Endless:
    """An upstream blob with no end: counts what it sent, and knows when its reader left."""

    length: int | None = None  # the Content-Length it announces; None: chunked
    sent: int = 0
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if self.length is None:
            response.enable_chunked_encoding()
        else:
            response.content_length = self.length
        await response.prepare(request)
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                await response.write(chunk)
                self.sent += len(chunk)
        except ConnectionError:
            return response
        finally:
            self.stopped.set()
