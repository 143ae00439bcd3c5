"""Writing an OCI image layout as a tar archive (image-spec image-layout.md): `oci-layout`,
`blobs/<alg>/<hex>` for every manifest and blob, and `index.json` naming each image.

Each entry of `index.json` carries the full reference in `org.opencontainers.image.ref.name`
(what `skopeo copy oci-archive:FILE:REF` looks up) and `io.containerd.image.name` (what
`ctr images import` names the image). The archive is streamed file by file, never held in
memory, and appears under its name only once complete (written aside, then renamed).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import orjson

from mirror.images.cached import BlobFile, CachedImage
from mirror.oci.digest import Digest
from mirror.oci.mediatypes import OCI_INDEX
from mirror.storage import files

LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
COPY_BUFFER = 1 << 20


class DamagedBlob(Exception):
    """A cached blob no longer hashes to its digest."""


class VanishedBlob(Exception):
    """A cached blob was removed (by gc, rm or eviction) before it was copied."""


def blob_path(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


def index_document(images: Iterable[CachedImage]) -> bytes:
    entries = [
        {
            "mediaType": image.top.media_type,
            "digest": str(image.top.digest),
            "size": len(image.top.data),
            "annotations": {REF_NAME: str(image.name), CONTAINERD_NAME: str(image.name)},
        }
        for image in images
    ]
    return orjson.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})


def write_archive(path: Path, images: list[CachedImage]) -> int:
    """Write the archive to `path` atomically; returns its size. Raises OSError,
    DamagedBlob or VanishedBlob, leaving nothing behind."""
    part = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part")
    try:
        with open(part, "xb") as f:
            with tarfile.TarFile(
                fileobj=f, mode="w", format=tarfile.PAX_FORMAT, copybufsize=COPY_BUFFER
            ) as tar:
                _write_layout(tar, images)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return size


def _write_layout(tar: tarfile.TarFile, images: list[CachedImage]) -> None:
    manifests = {d: m for image in images for d, m in image.manifests.items()}
    blobs = {d: b for image in images for d, b in image.blobs.items()}
    _add_directory(tar, "blobs")
    for algorithm in sorted({d.algorithm for d in [*manifests, *blobs]}):
        _add_directory(tar, f"blobs/{algorithm}")
    _add_bytes(tar, "oci-layout", LAYOUT)
    for blob in blobs.values():
        _add_blob(tar, blob)
    for manifest in manifests.values():
        _add_bytes(tar, blob_path(manifest.digest), manifest.data)
    # Last, so a reader that streams the archive has every blob before the index names it.
    _add_bytes(tar, "index.json", index_document(images))


def _info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    # Fixed owner, mode and time: the same images always make the same archive.
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mtime = size, kind, 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def _add_directory(tar: tarfile.TarFile, name: str) -> None:
    tar.addfile(_info(name, kind=tarfile.DIRTYPE))


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def _add_blob(tar: tarfile.TarFile, blob: BlobFile) -> None:
    """Copied while hashed: a blob damaged on disk since it was verified must not travel.
    Copied under a read lease, as a blob sent to a client is, so no removal takes it meanwhile."""
    leased = files.lease(blob.path)
    if leased is None:
        raise VanishedBlob(f"blob {blob.digest} left the cache (gc, rm or eviction) as it was read")
    lease = leased[0]
    try:
        with lease.open() as f:
            reader = _HashingReader(f, blob.digest.algorithm)
            tar.addfile(_info(blob_path(blob.digest), blob.size), reader)
    finally:
        lease.release()
    if reader.hexdigest() != blob.digest.hex:
        raise DamagedBlob(f"blob {blob.digest} in the cache does not match its digest")


class _HashingReader:
    def __init__(self, raw: BinaryIO, algorithm: str) -> None:
        self._raw = raw
        self._hasher = hashlib.new(algorithm)

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._hasher.update(data)
        return data

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()
