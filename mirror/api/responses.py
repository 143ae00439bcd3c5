"""Response builders: cached bytes through sendfile, manifests from memory, fills streamed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import BinaryIO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from mirror import log
from mirror.api.middlewares import abort
from mirror.errors import RangeInvalid
from mirror.pullthrough.fills import FillFailed, FillView
from mirror.pullthrough.manifests import ManifestAnswer
from mirror.storage.files import ReadLease


class BlobFileResponse(web.FileResponse):
    """A FileResponse that may be prepared early (the middleware finishes every response
    itself, and a multi-range request is prepared by the handler), holding the blob's read
    lease until the body is sent (FileResponse sends it all within `prepare`)."""

    def __init__(self, path: Path, *, headers: dict[str, str], lease: ReadLease) -> None:
        super().__init__(path, headers=headers)
        self._lease = lease

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return self._payload_writer
        try:
            return await super().prepare(request)
        finally:
            self._lease.release()


def manifest_response(answer: ManifestAnswer) -> web.StreamResponse:
    headers = {
        # The manifest's own media type, with no parameters (OCI distribution-spec).
        "Content-Type": answer.media_type,
        "Docker-Content-Digest": str(answer.digest),
        "ETag": f'"{answer.digest}"',
    }
    if answer.data is None:  # HEAD answered from an upstream HEAD
        response = web.StreamResponse(headers=headers)
        response.content_length = answer.size
        return response
    return web.Response(body=answer.data, headers=headers)


async def blob_file_response(
    request: web.Request, path: Path, headers: dict[str, str], lease: ReadLease
) -> web.FileResponse:
    response = BlobFileResponse(path, headers=headers, lease=lease)
    if "," in request.headers.get("Range", ""):
        # FileResponse answers 416 to multi-range requests, which podman's partial pulls
        # treat as fatal; the whole body with 200 is an answer they accept.
        without_range = {k: v for k, v in request.headers.items() if k.lower() != "range"}
        await response.prepare(request.clone(headers=without_range))
    return response


async def stream_fill(
    request: web.Request, fill: FillView, headers: dict[str, str]
) -> web.StreamResponse:
    """Send the blob (or the one range asked for) as the fill writes it; on failure, abort
    rather than end cleanly."""
    start, end, status = 0, fill.size, 200
    range_header = request.headers.get("Range", "")
    # Several ranges get the whole blob (podman's partial pulls accept that, not a 416).
    if fill.size is not None and range_header and "," not in range_header:
        try:
            wanted = request.http_range
        except ValueError:
            wanted = slice(fill.size, None)  # as FileResponse does for cached blobs: 416
        # RFC 9110 §14: clamp past the end, suffix ranges count from the end.
        start, end, _ = wanted.indices(fill.size)
        if start >= end:
            raise RangeInvalid(
                "requested range not satisfiable",
                headers={"Content-Range": f"bytes */{fill.size}"},
            )
        status = 206
        headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{fill.size}"}
    response = web.StreamResponse(status=status, headers=headers)
    if end is not None:
        response.content_length = end - start
    await response.prepare(request)
    sent = 0
    try:
        async for file, offset, count in fill.segments(start, end):
            await _send(request, response, file, offset, count, zero_copy=end is not None)
            sent += count
    except FillFailed:
        abort(request)
        return response
    except ConnectionError:
        return response  # the client went away; the fill goes on without it
    finally:
        log.note_streamed(sent)
    await response.write_eof()
    return response


async def _send(
    request: web.Request,
    response: web.StreamResponse,
    file: BinaryIO,
    offset: int,
    count: int,
    *,
    zero_copy: bool,
) -> None:
    """Bytes of a spool file to the client: by sendfile (no Python buffers, no copies) when the
    length was announced, else through the response writer (chunked encoding needs it)."""
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("the client went away")
    if zero_copy:
        await asyncio.get_running_loop().sendfile(transport, file, offset, count)
        return
    while count > 0:
        data = await asyncio.to_thread(os.pread, file.fileno(), min(count, 1 << 20), offset)
        if not data:
            raise FillFailed("spool file ended early")
        await response.write(data)
        offset += len(data)
        count -= len(data)
