"""Push and pull of one big image to the mirror's local namespace, against the same to the CNCF
registry (Debian's docker-registry, plain, no proxy), in one run.

The client does what docker does: a session (`POST`), the layer as one streamed `PATCH`
(chunked encoding, no Content-Range), the closing `PUT ?digest=`, the config in one `POST`, the
manifest; then the pull: manifest, config, layer. Each run pushes to a new repository on both
servers, so both receive and verify every byte every time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.context import Context, describe_problems
from bench.report import PhaseReport, table
from bench.stats import fmt, median, ratio
from tests.support.htpasswd import write_htpasswd
from tests.support.registry import start_registry

LOCAL = "bench.local"
USER, PASSWORD = "bench", "bench-Pa55word"
CHUNK = 1 << 20
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
GOAL = "≤1.5"


@dataclass(frozen=True)
class Layer:
    path: Path
    digest: str
    size: int


@dataclass(frozen=True)
class Run:
    target: str  # "mirror" or "registry"
    run: int
    push_s: float
    pull_s: float
    ok: bool
    error: str | None = None


def _make_layer(path: Path, size: int) -> Layer:
    hasher = hashlib.sha256()
    with path.open("wb") as f:
        for at in range(0, size, 16 * CHUNK):
            data = os.urandom(min(16 * CHUNK, size - at))
            hasher.update(data)
            f.write(data)
    return Layer(path, f"sha256:{hasher.hexdigest()}", size)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while data := await asyncio.to_thread(f.read, CHUNK):
            yield data


async def _push(session: aiohttp.ClientSession, base: str, repo: str, layer: Layer) -> bytes:
    """Push the image like docker; returns the manifest pushed."""
    started = await session.post(f"{base}/v2/{repo}/blobs/uploads/")
    assert started.status == 202, (started.status, await started.text())
    location = started.headers["Location"]
    url = location if location.startswith("http") else base + location
    patched = await session.patch(
        url, data=_file_chunks(layer.path), headers={"Content-Type": "application/octet-stream"}
    )
    assert patched.status == 202, (patched.status, await patched.text())
    location = patched.headers["Location"]
    url = location if location.startswith("http") else base + location
    done = await session.put(url, params={"digest": layer.digest})
    assert done.status == 201, (done.status, await done.text())
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    posted = await session.post(
        f"{base}/v2/{repo}/blobs/uploads/", params={"digest": config_digest}, data=config
    )
    if posted.status == 202:  # a registry without single-POST uploads: PUT to the session
        location = posted.headers["Location"]
        url = location if location.startswith("http") else base + location
        posted = await session.put(url, params={"digest": config_digest}, data=config)
    assert posted.status == 201, (posted.status, await posted.text())
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": layer.digest,
                    "size": layer.size,
                }
            ],
        }
    ).encode()
    put = await session.put(
        f"{base}/v2/{repo}/manifests/v1", data=manifest, headers={"Content-Type": DOCKER_MANIFEST}
    )
    assert put.status == 201, (put.status, await put.text())
    return manifest


async def _pull(session: aiohttp.ClientSession, base: str, repo: str, manifest: bytes) -> None:
    got = await session.get(f"{base}/v2/{repo}/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
    assert await got.read() == manifest
    document = json.loads(manifest)
    for descriptor in (document["config"], *document["layers"]):
        response = await session.get(f"{base}/v2/{repo}/blobs/{descriptor['digest']}")
        received = 0
        async for data in response.content.iter_chunked(CHUNK):
            received += len(data)
        assert response.status == 200 and received == descriptor["size"], response.status


async def _measure(
    target: str, run: int, base: str, repo: str, layer: Layer, auth: str | None, seconds: float
) -> Run:
    headers = {"Authorization": auth} if auth else {}
    client_timeout = aiohttp.ClientTimeout(total=seconds)
    async with aiohttp.ClientSession(headers=headers, timeout=client_timeout) as session:
        try:
            started = time.perf_counter()
            manifest = await _push(session, base, repo, layer)
            pushed = time.perf_counter()
            await _pull(session, base, repo, manifest)
            pulled = time.perf_counter()
        except (AssertionError, aiohttp.ClientError, TimeoutError) as e:
            return Run(target, run, 0.0, 0.0, False, f"{type(e).__name__}: {e}")
    return Run(target, run, pushed - started, pulled - pushed, True)


def run_push_phase(ctx: Context) -> PhaseReport:
    report = PhaseReport("push", f"push: a {ctx.plan.blob_bytes >> 20} MiB image, mirror vs CNCF")
    started = time.monotonic()
    directory = ctx.scratch("push")
    layer = _make_layer(directory / "layer", ctx.plan.blob_bytes)
    users = write_htpasswd(directory / "users", {USER: PASSWORD})
    config = directory / "mirror.toml"
    config.write_text(
        f'[local."{LOCAL}"]\n\n[[access]]\nusers = ["{USER}"]\nallow = ["{LOCAL}/*"]\n'
        'actions = ["pull", "push"]\n'
    )
    mirror = ctx.mirror(
        "push-mirror", extra_args=["--config", str(config), "--htpasswd", str(users)]
    )
    registry = start_registry(directory / "registry")
    auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    runs: list[Run] = []
    mirror.start()
    try:
        for n in range(ctx.plan.runs):
            # Alternate who goes first, so neither always meets a warmer page cache.
            order = [("mirror", mirror.url), ("registry", registry.url)]
            for target, base in order if n % 2 == 0 else order[::-1]:
                is_mirror = target == "mirror"
                repo = f"{LOCAL}/bench/run{n}" if is_mirror else f"bench/run{n}"
                credentials = auth if is_mirror else None
                timeout = ctx.plan.transfer_timeout
                runs.append(
                    asyncio.run(_measure(target, n, base, repo, layer, credentials, timeout))
                )
    finally:
        mirror.stop()
        registry.stop()
        layer.path.unlink(missing_ok=True)
    report.errors += [f"{r.target} run {r.run}: {r.error}" for r in runs if not r.ok]
    report.errors += describe_problems("push", mirror.problems())

    def med(target: str, field: str) -> float | None:
        return median([getattr(r, field) for r in runs if r.target == target and r.ok])

    mb = ctx.plan.blob_bytes / 1e6
    rows = []
    for field, label in (("push_s", "push"), ("pull_s", "pull")):
        mine, theirs = med("mirror", field), med("registry", field)
        rows.append(
            [
                label,
                fmt(mine, ".2f", " s"),
                fmt(mb / mine if mine else None, ".0f", " MB/s"),
                fmt(theirs, ".2f", " s"),
                fmt(mb / theirs if theirs else None, ".0f", " MB/s"),
                fmt(ratio(mine, theirs), ".2f", "x"),
                GOAL,
            ]
        )
    report.lines += table(
        ["", "mirror", "rate", "CNCF registry", "rate", "mirror ÷ CNCF", "target"], rows
    )
    report.data["runs"] = runs
    report.seconds = time.monotonic() - started
    return report
