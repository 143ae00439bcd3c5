"""Vocabulary for checking registry answers: Accept sets, error checks, cache paths, raw HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import ClientConnectionError, ClientPayloadError, ClientResponse

from tests.support.images import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST

# What Docker and containerd ask for: every v2/OCI manifest type.
ACCEPT_ALL = ", ".join([DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX])
# A client that knows single-platform manifests only.
ACCEPT_NO_INDEX = ", ".join([DOCKER_MANIFEST, OCI_MANIFEST])


async def assert_oci_error(response: ClientResponse, status: int, *codes: str) -> dict[str, Any]:
    """Check an OCI error answer: this status, a JSON body, and the first code among `codes`."""
    body = await response.read()
    assert response.status == status, (response.status, body[:500])
    assert response.content_type == "application/json", response.headers.get("Content-Type")
    document = await response.json()
    errors = document["errors"]
    assert isinstance(errors, list) and errors, document
    assert errors[0]["code"] in codes, document
    assert isinstance(errors[0].get("message", ""), str)
    return dict(document)


def _sharded(cache_dir: Path, kind: str, digest: str) -> Path:
    algorithm, _, hex_part = digest.partition(":")
    return cache_dir / kind / algorithm / hex_part[:2] / hex_part


def cached_blob(cache_dir: Path, digest: str) -> Path:
    """Where the mirror keeps a verified blob."""
    return _sharded(cache_dir, "blobs", digest)


def cached_manifest(cache_dir: Path, digest: str) -> Path:
    """Where the mirror keeps a verified manifest."""
    return _sharded(cache_dir, "manifests", digest)


def spool_files(cache_dir: Path) -> list[Path]:
    """What is left in the spool (in-progress downloads)."""
    spool = cache_dir / "spool"
    return sorted(spool.rglob("*")) if spool.exists() else []


async def raw_request(
    host: str, port: int, method: str, target: str, within: float = 10.0
) -> tuple[int, bytes]:
    """Send a request line exactly as given (no client-side normalisation); return (status, raw).

    aiohttp's and yarl's URL handling would resolve `..` or re-encode the path before it left,
    which is precisely what adversarial tests must not let happen.
    """
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = f"{method} {target} HTTP/1.1\r\nHost: mirror\r\nConnection: close\r\n\r\n"
        writer.write(request.encode("latin-1"))
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), within)
    finally:
        writer.close()
        await writer.wait_closed()
    status_line = raw.split(b"\r\n", 1)[0]
    parts = status_line.split()
    assert len(parts) >= 2 and parts[1].isdigit(), raw[:200]
    return int(parts[1]), raw


async def wait_until(predicate: Callable[[], bool], within: float = 3.0) -> bool:
    """Poll for a condition that the app's background fill reaches shortly after the response."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def assert_broken(response: ClientResponse, expected: bytes) -> None:
    """The client must see an error: an error status, or a body that breaks off, never clean."""
    if response.status != 200:
        assert response.status >= 500 or response.status == 400, response.status
        return
    length = int(response.headers.get("Content-Length", len(expected)))
    try:
        body = await response.read()
    except (ClientPayloadError, ClientConnectionError):
        return
    raise AssertionError(
        f"clean end of a bad body: got {len(body)} bytes of {length}, intact={body == expected}"
    )
