"""Thin handlers for local namespaces: pulls of what was pushed, and the push API (OCI
distribution-spec "Push", "Content Discovery", "Content Management").

`local_or(mirrored, local)` puts a local handler beside a mirrored one on the same route: the
request goes to the local one when its name routes to a local namespace. The write routes have
`unsupported` as their mirrored side, so a push to a mirrored registry stays `405 UNSUPPORTED`.
The login and the access rules were checked by the auth middleware before any of this runs.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from yarl import URL

from mirror import log
from mirror.api.handlers import unsupported
from mirror.api.keys import ACCESS, HOLDINGS, LOCAL, ROUTER, USER
from mirror.api.middlewares import Handler
from mirror.api.responses import (
    blob_head,
    blob_headers,
    leased_body,
    manifest_response,
    send_blob,
)
from mirror.auth.access import PULL
from mirror.errors import (
    DigestInvalid,
    ManifestTooLarge,
    ManifestUnknown,
    MirrorError,
    RangeInvalid,
    SizeInvalid,
)
from mirror.local.blobs import Chunk
from mirror.local.inspect import MAX_MANIFEST
from mirror.local.uploads import upload_range
from mirror.oci.digest import Digest
from mirror.oci.mediatypes import OCI_INDEX, accepted_types, is_acceptable
from mirror.pullthrough.listings import page_size, paginate
from mirror.pullthrough.routing import LocalRoute, Route

LocalHandler = Callable[[web.Request, LocalRoute], Awaitable[web.StreamResponse]]
# distribution-spec: `<range>` "MUST match ^[0-9]+-[0-9]+$"; a `bytes=` or `bytes ` prefix, which
# some clients write, is taken too.
_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?([0-9]{1,18})-([0-9]{1,18})", re.ASCII)


def local_or(mirrored: Handler, local: LocalHandler) -> Handler:
    """A handler that serves local repositories with `local` and the rest with `mirrored`."""

    async def handler(request: web.Request) -> web.StreamResponse:
        route = request.app[ROUTER].local(request.match_info["name"], request.query.get("ns"))
        if route is None:
            return await mirrored(request)
        log.note_route(route.registry)
        response = await local(request, route)
        if route.namespace is not None and not response.prepared:
            response.headers["OCI-Namespace"] = route.namespace
        return response

    return handler


def write_only(local: LocalHandler) -> Handler:
    """A push API route: mirrored registries are read-only."""
    return local_or(unsupported, local)


def _name(request: web.Request) -> str:
    return request.match_info["name"]


def _url(request: web.Request, path: str) -> str:
    """A path on this mirror, keeping the `ns` the request was routed by."""
    ns = request.query.get("ns")
    return str(URL.build(path=path, query={"ns": ns} if ns is not None else None))


# Pulls


async def blob(request: web.Request, route: LocalRoute) -> web.StreamResponse:
    """Served as a cached blob is (handlers.blob): the same headers, ranges and sendfile."""
    digest = Digest.parse(request.match_info["digest"])
    found = request.app[LOCAL].blobs.find(route, digest)
    headers = blob_headers(digest, None)
    if request.method == "HEAD":
        found.lease.release()
        return blob_head(request, headers, found.size)
    with leased_body(found) as body:
        return await send_blob(request, headers, body)


async def manifest(request: web.Request, route: LocalRoute) -> web.StreamResponse:
    answer = await request.app[LOCAL].manifests.get(route, request.match_info["reference"])
    if not is_acceptable(answer.media_type, accepted_types(request.headers.getall("Accept", []))):
        raise ManifestUnknown(
            f"manifest is {answer.media_type}, which the request's Accept header excludes"
        )
    return manifest_response(answer, request.headers.get("If-None-Match"))


async def tags_list(request: web.Request, route: LocalRoute) -> web.StreamResponse:
    n = page_size(request.query.get("n"))
    tags = await request.app[LOCAL].manifests.tags(route)
    page = paginate(tags, n, request.query.get("last"))
    headers = {"Content-Type": "application/json"}
    if page.more:
        following = {**request.query, "n": str(n), "last": page.tags[-1]}
        next_url = URL.build(path=request.path, query=following)
        headers["Link"] = f'<{next_url}>; rel="next"'
    body = json.dumps({"name": _name(request), "tags": page.tags}).encode()
    return web.Response(body=body, headers=headers)


async def referrers(request: web.Request, route: LocalRoute) -> web.StreamResponse:
    subject = Digest.parse(request.match_info["digest"])
    artifact_type = request.query.get("artifactType")
    listing = await request.app[LOCAL].manifests.referrers(route, subject, artifact_type)
    headers = {"Content-Type": OCI_INDEX}
    if listing.filtered:
        headers["OCI-Filters-Applied"] = "artifactType"
    return web.Response(body=listing.body, headers=headers)


# Manifests


async def put_manifest(request: web.Request, route: LocalRoute) -> web.StreamResponse:
    data = await _read_manifest(request)
    reference = request.match_info["reference"]
    content_type = request.headers.get("Content-Type")
    pushed = await request.app[LOCAL].manifests.put(route, reference, data, content_type)
    headers = {
        "Location": _url(request, f"/v2/{_name(request)}/manifests/{pushed.digest}"),
        "Docker-Content-Digest": str(pushed.digest),
    }
    if pushed.subject is not None:
        # distribution-spec "Pushing Manifests with Subject": the registry processed it.
        headers["OCI-Subject"] = str(pushed.subject)
    return web.Response(status=201, headers=headers)


async def _read_manifest(request: web.Request) -> bytes:
    """The body, refused (413) past the limit before it is read, or as soon as it passes it."""
    too_large = ManifestTooLarge(f"manifests are limited to {MAX_MANIFEST >> 20} MiB")
    if request.content_length is not None and request.content_length > MAX_MANIFEST:
        raise too_large
    data = bytearray()
    while chunk := await request.content.read(64 << 10):
        data += chunk
        if len(data) > MAX_MANIFEST:
            raise too_large
    return bytes(data)


async def delete_manifest(request: web.Request, route: LocalRoute) -> web.StreamResponse:
    await request.app[LOCAL].manifests.delete(route, request.match_info["reference"])
    return web.Response(status=202)


async def delete_blob(request: web.Request, route: LocalRoute) -> web.StreamResponse:
    await request.app[LOCAL].blobs.delete(route, Digest.parse(request.match_info["digest"]))
    return web.Response(status=202)


# Uploads


def _created(request: web.Request, digest: Digest) -> web.Response:
    headers = {
        "Location": _url(request, f"/v2/{_name(request)}/blobs/{digest}"),
        "Docker-Content-Digest": str(digest),
    }
    return web.Response(status=201, headers=headers)


def _session_headers(request: web.Request, id: str, size: int) -> dict[str, str]:
    return {
        "Location": _url(request, f"/v2/{_name(request)}/blobs/uploads/{id}"),
        "Range": upload_range(size),
        "Docker-Upload-UUID": id,
    }


def _chunk(request: web.Request) -> Chunk:
    """The body and what the request declares of it."""
    length = request.content_length
    header = request.headers.get("Content-Range")
    if header is None:
        return Chunk(request.content, None, length)
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if match is None or int(match[2]) < int(match[1]):
        raise RangeInvalid(f"Content-Range {header[:100]!r} is not <start>-<end>")
    start, declared = int(match[1]), int(match[2]) - int(match[1]) + 1
    if length is not None and length != declared:
        raise SizeInvalid(f"Content-Length {length} is not the {declared} bytes of Content-Range")
    return Chunk(request.content, start, declared)


async def start_upload(request: web.Request, route: LocalRoute) -> web.StreamResponse:
    """`POST …/blobs/uploads/`: a mount, a whole blob, or a new session."""
    local = request.app[LOCAL]
    if "mount" in request.query and (digest := await _mount(request, route)) is not None:
        return _created(request, digest)
    if "digest" in request.query:
        digest = Digest.parse(request.query["digest"])
        await local.blobs.push(route, digest, _chunk(request))
        return _created(request, digest)
    id = await local.blobs.start_upload(route)
    return web.Response(status=202, headers=_session_headers(request, id, 0))


async def _mount(request: web.Request, route: LocalRoute) -> Digest | None:
    """distribution-spec "Mounting a blob from another repository": the blob is linked when
    the client may pull `from` and `from` holds it; otherwise None, and the client gets an
    upload session instead."""
    try:
        digest = Digest.parse(request.query["mount"])
        source = request.app[ROUTER].resolve(request.query["from"], request.query.get("ns"))
    except (KeyError, MirrorError):
        return None
    target = f"{source.registry}/{source.repo}"
    if not request.app[ACCESS].allows(request.get(USER), PULL, target):
        return None
    holdings = request.app.get(HOLDINGS)
    if (
        holdings is not None
        and isinstance(source, Route)
        and not await holdings.holds(source.registry, source.repo, digest)
    ):
        return None  # the blob is cached, but not known to be that repository's
    return digest if await request.app[LOCAL].blobs.mount(route, digest, source) else None


async def upload_status(request: web.Request, route: LocalRoute) -> web.StreamResponse:
    id = request.match_info["session"]
    size = await request.app[LOCAL].blobs.upload_size(route, id)
    return web.Response(status=204, headers=_session_headers(request, id, size))


async def upload_chunk(request: web.Request, route: LocalRoute) -> web.StreamResponse:
    id = request.match_info["session"]
    async with _upload_errors(request, route, id):
        size = await request.app[LOCAL].blobs.append(route, id, _chunk(request))
    return web.Response(status=202, headers=_session_headers(request, id, size))


async def finish_upload(request: web.Request, route: LocalRoute) -> web.StreamResponse:
    id = request.match_info["session"]
    if "digest" not in request.query:
        raise DigestInvalid("the closing PUT needs ?digest=<digest of the whole blob>")
    digest = Digest.parse(request.query["digest"])
    async with _upload_errors(request, route, id):
        chunk = _chunk(request) if request.body_exists else None
        await request.app[LOCAL].blobs.finish(route, id, digest, chunk)
    return _created(request, digest)


async def cancel_upload(request: web.Request, route: LocalRoute) -> web.StreamResponse:
    await request.app[LOCAL].blobs.cancel_upload(route, request.match_info["session"])
    return web.Response(status=204)


@contextlib.asynccontextmanager
async def _upload_errors(request: web.Request, route: LocalRoute, id: str) -> AsyncIterator[None]:
    """A 416 carries where the upload stands (`Range`) and its `Location`."""
    try:
        yield
    except RangeInvalid as error:
        if "Range" not in error.headers:
            size = await request.app[LOCAL].blobs.upload_size(route, id)
            error.headers["Range"] = upload_range(size)
        location = _session_headers(request, id, 0)["Location"]
        error.headers.update({"Location": location, "Docker-Upload-UUID": id})
        raise
