"""Thin handlers: parse and validate the request, ask a service, build the response."""

from __future__ import annotations

from aiohttp import web
from yarl import URL

from mirror.api.responses import blob_file_response, manifest_response, stream_fill
from mirror.errors import ManifestUnknown, Unsupported
from mirror.keys import BLOBS, DOCKER_HUB, MANIFESTS, TAG_LISTS
from mirror.oci.digest import Digest, looks_like_digest
from mirror.oci.mediatypes import accepted_types, is_acceptable
from mirror.oci.names import validate_name, validate_tag
from mirror.pullthrough.blobs import CachedBlob
from mirror.pullthrough.routing import upstream_repository


def _repository(request: web.Request) -> str:
    name = validate_name(request.match_info["name"])
    return upstream_repository(name, docker_hub=request.app[DOCKER_HUB])


async def ping(request: web.Request) -> web.Response:
    return web.Response(body=b"{}", headers={"Content-Type": "application/json"})


async def manifest(request: web.Request) -> web.StreamResponse:
    repo = _repository(request)
    reference = request.match_info["reference"]
    service = request.app[MANIFESTS]
    if looks_like_digest(reference):
        answer = await service.by_digest(
            repo, Digest.parse(reference), head=request.method == "HEAD"
        )
    else:
        answer = await service.by_tag(repo, validate_tag(reference))
    if not is_acceptable(answer.media_type, accepted_types(request.headers.getall("Accept", []))):
        # Never convert: a client that cannot read what the reference points to gets a 404,
        # as distribution answers (and the client falls back to the upstream).
        raise ManifestUnknown(
            f"manifest is {answer.media_type}, which the request's Accept header excludes"
        )
    return manifest_response(answer)


async def blob(request: web.Request) -> web.StreamResponse:
    repo = _repository(request)
    digest = Digest.parse(request.match_info["digest"])
    service = request.app[BLOBS]
    cached = service.cached(digest)
    if cached is None and request.method == "HEAD":
        size = await service.upstream_size(repo, digest)
        response = web.StreamResponse(headers=_blob_headers(digest))
        if size is not None:
            response.content_length = size
        return response
    if cached is None:
        source = await service.fetch(repo, digest)
        if not isinstance(source, CachedBlob):
            return await stream_fill(request, source, _blob_headers(digest))
        cached = source
    return await blob_file_response(request, digest, cached.path)


def _blob_headers(digest: Digest) -> dict[str, str]:
    return {"Content-Type": "application/octet-stream", "Docker-Content-Digest": str(digest)}


async def tags_list(request: web.Request) -> web.Response:
    name = validate_name(request.match_info["name"])
    repo = upstream_repository(name, docker_hub=request.app[DOCKER_HUB])
    query = {k: request.query[k] for k in ("n", "last") if k in request.query}
    body, link = await request.app[TAG_LISTS].page(repo, query)
    headers = {"Content-Type": "application/json"}
    if link and (next_query := _next_page_query(link)) is not None:
        # The upstream's Link names its own path; point the client at ours instead.
        next_url = URL.build(path=f"/v2/{name}/tags/list", query=next_query)
        headers["Link"] = f'<{next_url}>; rel="next"'
    return web.Response(body=body, headers=headers)


def _next_page_query(link: str) -> dict[str, str] | None:
    start, end = link.find("<"), link.find(">")
    if start < 0 or end < start:
        return None
    query = URL(link[start + 1 : end]).query
    return {k: query[k] for k in ("n", "last") if k in query}


async def unsupported(request: web.Request) -> web.Response:
    raise Unsupported(
        f"{request.method} {request.path[:200]} is not supported by a pull-through mirror"
    )
