"""Thin handlers: parse and validate the request, ask a service, build the response."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from functools import partial

from aiohttp import web
from yarl import URL

from mirror import log
from mirror.api.hot import HotAnswer
from mirror.api.keys import (
    BLOBS,
    HOLDINGS,
    HOT_ANSWERS,
    LISTINGS,
    MANIFESTS,
    METRICS,
    ROUTER,
    UPKEEP,
)
from mirror.api.middlewares import API_VERSION
from mirror.api.responses import (
    blob_head,
    blob_headers,
    blob_redirect,
    leased_body,
    manifest_response,
    send_blob,
    send_streamed,
    while_there,
)
from mirror.errors import ManifestUnknown, NameUnknown, Unsupported, UpstreamError
from mirror.oci.digest import Digest, looks_like_digest
from mirror.oci.mediatypes import OCI_INDEX, accepted_types, is_acceptable
from mirror.oci.names import validate_tag
from mirror.pullthrough.blobs import CachedBlob, SharedBlob
from mirror.pullthrough.listings import page_size, paginate
from mirror.pullthrough.routing import Route


def _route(request: web.Request) -> Route:
    route = request.app[ROUTER].route(request.match_info["name"], request.query.get("ns"))
    log.note_route(route.upstream.name, route.repo)
    return route


def _namespaced(response: web.StreamResponse, route: Route) -> web.StreamResponse:
    # distribution-spec "Registry Proxying": echo the ns a request was scoped by.
    if route.namespace is not None and not response.prepared:
        response.headers["OCI-Namespace"] = route.namespace
    return response


async def _vouch(
    request: web.Request, route: Route, digest: Digest, ask: Callable[[], Awaitable[object]]
) -> None:
    """With access rules, content by digest goes out through a repository only once it is
    known to hold it (mirror/pullthrough/holdings.py): the cache may have it from another
    repository, so otherwise this one's upstream decides, by `ask` (a HEAD through it). Only
    when the upstream cannot be asked does a manifest the repository holds naming it do."""
    holdings = request.app.get(HOLDINGS)
    if holdings is None or await holdings.holds(route.upstream.name, route.repo, digest):
        return
    try:
        await ask()
    except UpstreamError:
        if await holdings.names(route.upstream.name, route.repo, digest):
            return
        raise
    await holdings.hold(route.upstream.name, route.repo, (digest,))


async def ping(request: web.Request) -> web.Response:
    return web.Response(body=b"{}", headers={"Content-Type": "application/json"})


async def manifest(request: web.Request) -> web.StreamResponse:
    hot = request.app[HOT_ANSWERS]
    key = hot.key(request)
    conditional = request.headers.get("If-None-Match")
    if conditional is None and (ready := hot.get(key)) is not None:
        return ready.serve(request.app[UPKEEP].access)
    route = _route(request)
    reference = request.match_info["reference"]
    service = request.app[MANIFESTS]
    if by_digest := looks_like_digest(reference):
        digest = Digest.parse(reference)
        await _vouch(
            request, route, digest, partial(route.upstream.head_manifest, route.repo, reference)
        )
        answer = await service.by_digest(
            route.upstream, route.repo, digest, head=request.method == "HEAD"
        )
    else:
        answer = await service.by_tag(route.upstream, route.repo, validate_tag(reference))
    if (holdings := request.app.get(HOLDINGS)) is not None:
        await holdings.hold_manifest(route.upstream.name, route.repo, answer.digest, answer.data)
    if not is_acceptable(answer.media_type, accepted_types(request.headers.getall("Accept", []))):
        # Never convert: a client that cannot read what the reference points to gets a 404,
        # as distribution answers (and the client falls back to the upstream).
        raise ManifestUnknown(
            f"manifest is {answer.media_type}, which the request's Accept header excludes"
        )
    if not by_digest:
        request.app[UPKEEP].access.pulled(route.upstream.name, route.repo, reference)
    response = _namespaced(manifest_response(answer, conditional), route)
    if (
        response.status == 200
        and answer.data is not None
        and (by_digest or route.upstream.settings.ttl_for(reference) >= hot.ttl)
    ):
        ready = HotAnswer(
            route.upstream.name,
            route.repo,
            None if by_digest else reference,
            answer.digest,
            answer.data,
            {**response.headers, **API_VERSION},  # all the headers it goes out with
        )
        hot.put(key, ready)
    return response


async def blob(request: web.Request) -> web.StreamResponse:
    route = _route(request)
    digest = Digest.parse(request.match_info["digest"])
    await _vouch(request, route, digest, partial(route.upstream.head_blob, route.repo, digest))
    service = request.app[BLOBS]
    cached = service.cached(digest)
    headers = blob_headers(digest, route.namespace)
    if request.method == "HEAD":
        if cached is not None:
            cached.lease.release()
            return blob_head(request, headers, cached.size)
        return blob_head(
            request, headers, await service.uncached_size(route.upstream, route.repo, digest)
        )
    if cached is None:
        # A client that leaves stops waiting for its download to start.
        source = await service.fetch(
            route.upstream, route.repo, digest, partial(while_there, request)
        )
        if isinstance(source, SharedBlob):
            if source.redirect:
                return blob_redirect(await source.url(), headers)
            return await send_streamed(request, headers, source)
        if not isinstance(source, CachedBlob):
            metrics = request.app.get(METRICS)
            with metrics.streaming() if metrics else contextlib.nullcontext():
                return await send_blob(request, headers, source)
        cached = source
    with leased_body(cached) as body:
        return await send_blob(request, headers, body)


async def tags_list(request: web.Request) -> web.StreamResponse:
    route = _route(request)
    n = page_size(request.query.get("n"))
    last = request.query.get("last")
    tags = await request.app[LISTINGS].tags(route.upstream, route.repo)
    page = paginate(tags, n, last)
    name = request.match_info["name"]
    headers = {"Content-Type": "application/json"}
    if page.more:
        # RFC 8288 Link to the next page, on the mirror (with the ns that routed this one).
        following = {"n": str(n), "last": page.tags[-1]}
        if route.namespace is not None:
            following["ns"] = route.namespace
        next_url = URL.build(path=f"/v2/{name}/tags/list", query=following)
        headers["Link"] = f'<{next_url}>; rel="next"'
    body = json.dumps({"name": name, "tags": page.tags}).encode()
    return _namespaced(web.Response(body=body, headers=headers), route)


async def referrers(request: web.Request) -> web.StreamResponse:
    route = _route(request)
    digest = Digest.parse(request.match_info["digest"])
    query = {k: request.query[k] for k in ("artifactType",) if k in request.query}
    listing = await request.app[LISTINGS].referrers(route.upstream, route.repo, digest, query)
    headers = {"Content-Type": OCI_INDEX, **listing.headers}
    return _namespaced(web.Response(body=listing.body, headers=headers), route)


async def unsupported(request: web.Request) -> web.Response:
    """Any other /v2/ path: nothing there to read (the same answer to GET and HEAD), and
    nothing to write."""
    if request.method in ("GET", "HEAD"):
        raise NameUnknown(f"no such endpoint: {request.path[:200]}")
    raise Unsupported(
        f"{request.method} {request.path[:200]} is not supported by a pull-through mirror"
    )
