"""Real container images built in memory, and a small client that pushes them to a registry.

The layers are genuine gzip'd tars and the configs carry correct `rootfs.diff_ids`, so the same
images serve the functional tests (which compare bytes and digests) and the end-to-end tests (where
docker, containerd and skopeo unpack them).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import random
import tarfile
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPResponse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.tokens import TokenService

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

# Fixed timestamps keep images reproducible: the same arguments always give the same digests.
_CREATED = "2024-01-01T00:00:00Z"
_MTIME = 1_704_067_200


def sha256_digest(data: bytes) -> str:
    """The OCI digest string of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """Content addressed by its digest, with the media type its descriptor carries."""

    data: bytes
    digest: str
    media_type: str

    @property
    def size(self) -> int:
        return len(self.data)

    @classmethod
    def of(cls, data: bytes, media_type: str) -> Blob:
        return cls(data=data, digest=sha256_digest(data), media_type=media_type)


@dataclass(frozen=True)
class Image:
    """A single-platform image: its config, layers and the exact manifest bytes."""

    config: Blob
    layers: list[Blob]
    manifest: bytes
    digest: str
    media_type: str
    arch: str = "amd64"

    @property
    def blobs(self) -> list[Blob]:
        return [self.config, *self.layers]


@dataclass(frozen=True)
class Index:
    """A multi-platform index (OCI) or manifest list (Docker) over `images`."""

    manifest: bytes
    digest: str
    media_type: str
    images: list[Image]


def _layer(size: int, rng: random.Random, name: str) -> tuple[bytes, str]:
    """A gzip'd tar holding one file of `size` incompressible bytes; returns (blob, diff_id)."""
    # Drawn in pieces: one randbytes call overflows a C int at 256 MiB.
    content = b"".join(rng.randbytes(min(1 << 26, size - at)) for at in range(0, size, 1 << 26))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = _MTIME
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(content))
    uncompressed = raw.getvalue()
    # Stored (level 0) deflate blocks: the payload is random, so compressing only costs time
    # (level 1 takes six times longer on a 200 MiB layer); the result is still valid gzip.
    compressed = gzip.compress(uncompressed, compresslevel=0, mtime=0)
    return compressed, sha256_digest(uncompressed)


def _platform(arch: str) -> dict[str, str]:
    platform = {"architecture": arch, "os": "linux"}
    if arch == "arm64":
        platform["variant"] = "v8"
    return platform


def _dump(document: object) -> bytes:
    # An unusual indent makes any re-serialisation by a proxy visible as changed bytes.
    return json.dumps(document, indent=3).encode()


def make_image(
    *,
    layer_sizes: Sequence[int] = (1024,),
    oci: bool = False,
    arch: str = "amd64",
    seed: int | str = 0,
    base_seed: str | None = None,
) -> Image:
    """An image with one layer per entry of `layer_sizes`; different seeds, different bytes.
    Images with the same `base_seed` (and first layer size) share their first layer."""
    layers: list[Blob] = []
    diff_ids: list[str] = []
    layer_type = OCI_LAYER if oci else DOCKER_LAYER
    for i, size in enumerate(layer_sizes):
        rng = random.Random(f"{base_seed if i == 0 and base_seed else seed}/{arch}/{i}")
        data, diff_id = _layer(size, rng, f"data-{i}.bin")
        layers.append(Blob.of(data, layer_type))
        diff_ids.append(diff_id)
    config_doc = {
        "architecture": arch,
        "os": "linux",
        **({"variant": "v8"} if arch == "arm64" else {}),
        "created": _CREATED,
        "config": {"Labels": {"seed": str(seed)}, "Cmd": ["/data-0.bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": _CREATED, "created_by": f"layer {i}"} for i in range(len(layers))],
    }
    config = Blob.of(_dump(config_doc), OCI_CONFIG if oci else DOCKER_CONFIG)
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": _descriptor(config),
        "layers": [_descriptor(layer) for layer in layers],
    }
    manifest = _dump(manifest_doc)
    return Image(
        config=config,
        layers=layers,
        manifest=manifest,
        digest=sha256_digest(manifest),
        media_type=media_type,
        arch=arch,
    )


def _descriptor(blob: Blob) -> dict[str, object]:
    return {"mediaType": blob.media_type, "size": blob.size, "digest": blob.digest}


def make_index(images: Sequence[Image], *, oci: bool = True) -> Index:
    """An OCI index (or Docker manifest list) with one entry per image, platform from its arch."""
    media_type = OCI_INDEX if oci else DOCKER_MANIFEST_LIST
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            {
                "mediaType": image.media_type,
                "size": len(image.manifest),
                "digest": image.digest,
                "platform": _platform(image.arch),
            }
            for image in images
        ],
    }
    manifest = _dump(document)
    return Index(
        manifest=manifest,
        digest=sha256_digest(manifest),
        media_type=media_type,
        images=list(images),
    )


class PushError(RuntimeError):
    """The registry refused part of a push."""


class _Pusher:
    """Just enough of the registry push API (monolithic uploads) to seed an upstream."""

    def __init__(self, registry_url: str, repo: str, auth: TokenService | tuple[str, str] | None):
        self.base = registry_url.rstrip("/")
        self.repo = repo
        self.headers: dict[str, str] = {}
        if isinstance(auth, tuple):
            user, password = auth
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        elif auth is not None:
            self.headers["Authorization"] = f"Bearer {auth.issue_token(repo, ('pull', 'push'))}"

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[HTTPResponse, bytes]:
        parts = urllib.parse.urlsplit(urllib.parse.urljoin(self.base + "/", url))
        conn = HTTPConnection(parts.netloc, timeout=60)
        try:
            target = parts.path + ("?" + parts.query if parts.query else "")
            conn.request(method, target, body=body, headers={**self.headers, **(headers or {})})
            response = conn.getresponse()
            return response, response.read()
        finally:
            conn.close()

    def push_blob(self, blob: Blob) -> None:
        response, _ = self.request("HEAD", f"/v2/{self.repo}/blobs/{blob.digest}")
        if response.status == 200:
            return
        response, body = self.request("POST", f"/v2/{self.repo}/blobs/uploads/")
        if response.status != 202:
            raise PushError(f"POST upload for {self.repo}: {response.status} {body!r}")
        location = response.headers["Location"]
        separator = "&" if "?" in location else "?"
        response, body = self.request(
            "PUT",
            f"{location}{separator}digest={urllib.parse.quote(blob.digest)}",
            body=blob.data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if response.status != 201:
            raise PushError(f"PUT blob {blob.digest} to {self.repo}: {response.status} {body!r}")

    def push_manifest(self, reference: str, manifest: bytes, media_type: str) -> None:
        response, body = self.request(
            "PUT",
            f"/v2/{self.repo}/manifests/{reference}",
            body=manifest,
            headers={"Content-Type": media_type},
        )
        if response.status != 201:
            raise PushError(f"PUT manifest {self.repo}:{reference}: {response.status} {body!r}")


def push_image(
    registry_url: str,
    repo: str,
    tag: str | None,
    image: Image,
    *,
    auth: TokenService | tuple[str, str] | None = None,
) -> None:
    """Upload the image's blobs then its manifest, under `tag` (or only by digest when None)."""
    pusher = _Pusher(registry_url, repo, auth)
    for blob in image.blobs:
        pusher.push_blob(blob)
    pusher.push_manifest(tag or image.digest, image.manifest, image.media_type)


def push_index(
    registry_url: str,
    repo: str,
    tag: str | None,
    index: Index,
    *,
    auth: TokenService | tuple[str, str] | None = None,
) -> None:
    """Push every child image by digest, then the index under `tag` (or by digest when None)."""
    for image in index.images:
        push_image(registry_url, repo, None, image, auth=auth)
    pusher = _Pusher(registry_url, repo, auth)
    pusher.push_manifest(tag or index.digest, index.manifest, index.media_type)
