"""A whole image as the cache holds it, read from the stores alone (no upstream is asked):
the manifest a reference points to, every manifest under it and every blob they need."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mirror.errors import MirrorError
from mirror.images.targets import resolve
from mirror.oci.contents import MAX_INDEX_DEPTH, InvalidManifest, read_contents
from mirror.oci.digest import Digest
from mirror.oci.platform import describe
from mirror.oci.reference import ImageReference
from mirror.services import Services
from mirror.storage.manifests import StoredManifest


class NotCached(Exception):
    """Part of the image is not in the cache (or is damaged); the message says which."""


@dataclass(frozen=True, slots=True)
class BlobFile:
    digest: Digest
    path: Path
    size: int


class BlobFiles(Protocol):
    """Where an image's blobs are read from when not from the cache directory alone."""

    async def find(self, digest: Digest) -> tuple[Path, int] | None:
        """A file holding the blob, and its size; None when there is none."""
        ...


@dataclass(slots=True)
class CachedImage:
    name: ImageReference  # the full reference, as bundles name the image
    top: StoredManifest
    manifests: dict[Digest, StoredManifest] = field(default_factory=dict)  # the top one too
    blobs: dict[Digest, BlobFile] = field(default_factory=dict)


async def read_cached_image(
    services: Services, reference: ImageReference, blobs: BlobFiles | None = None
) -> CachedImage:
    """The whole image; its blobs from `blobs`, or the cache directory's own."""
    try:
        target = resolve(services.router, reference)
    except MirrorError as e:
        raise NotCached(e.message) from None
    digest = reference.digest
    if digest is None:
        assert reference.tag is not None
        record = await services.tag_store.get(target.upstream.name, target.repo, reference.tag)
        if record is None:
            raise NotCached("the tag is not in the cache")
        digest = record.parsed_digest
    top = await services.manifest_store.get(digest)
    if top is None:
        raise NotCached(f"manifest {digest} is not in the cache")
    image = CachedImage(target.name, top)
    await _collect(services, blobs, image, top, depth=0)
    return image


async def _collect(
    services: Services,
    blobs: BlobFiles | None,
    image: CachedImage,
    manifest: StoredManifest,
    depth: int,
) -> None:
    image.manifests[manifest.digest] = manifest
    try:
        contents = read_contents(manifest.data)
    except InvalidManifest as e:
        raise NotCached(f"manifest {manifest.digest}: {e}") from None
    if contents.is_index and depth >= MAX_INDEX_DEPTH:
        raise NotCached(f"indexes nested more than {MAX_INDEX_DEPTH} deep")
    for child in contents.manifests:
        stored = await services.manifest_store.get(child.digest)
        if stored is None:
            raise NotCached(
                f"the index's {describe(child.platform)} manifest {child.digest} is not in the "
                "cache (prefetch it with --platform all)"
            )
        await _collect(services, blobs, image, stored, depth + 1)
    for blob in contents.blobs:
        if blobs is None:
            found = services.blob_store.find(blob.digest)
        else:
            found = await blobs.find(blob.digest)
        if found is None:
            raise NotCached(f"blob {blob.digest} is not in the cache")
        path, size = found
        if size != blob.size:
            raise NotCached(f"blob {blob.digest} in the cache has {size} bytes, not {blob.size}")
        image.blobs[blob.digest] = BlobFile(blob.digest, path, size)
