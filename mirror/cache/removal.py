"""Removing images by reference (`mirror rm`): the names go, then whatever no remaining name
leads to.

A tag reference removes that tag; a digest reference removes the tags of that repository that
point at it (a bare digest: every tag that does) and the image itself when no tag names it any
more. An image no tag names is removed with every manifest no remaining image uses. Its blobs
stay, marked unused, for the next `gc`: a pull may still be reading them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mirror.cache.inventory import Inventory, Stores
from mirror.oci.digest import Digest
from mirror.oci.reference import ImageReference
from mirror.storage.files import StoredFile
from mirror.storage.tags import TagEntry


class NotCached(Exception):
    """A reference names nothing in the cache."""


@dataclass(frozen=True, slots=True)
class Target:
    """What to remove: an image reference, or a bare digest (every tag naming it)."""

    reference: ImageReference | None
    digest: Digest | None = None

    def __str__(self) -> str:
        return str(self.reference) if self.reference is not None else str(self.digest)


@dataclass
class Removal:
    tags: list[TagEntry]
    images: list[Digest]
    manifests: list[Digest]
    unused_blobs: list[StoredFile]


def plan(inventory: Inventory, targets: list[Target]) -> Removal:
    """What removing `targets` takes away; NotCached names the first target that is not there."""
    removed_tags: set[TagEntry] = set()
    named: set[Digest] = set()
    for target in targets:
        tags, digest = _resolve(inventory, target)
        if not tags and digest not in inventory.manifests:
            raise NotCached(f"{target} is not in the cache")
        removed_tags |= tags
        if digest is not None:
            named.add(digest)
    kept: set[Digest] = set()
    gone: set[Digest] = set()
    for image in inventory.images():
        remaining = [t for t in image.tags if t not in removed_tags]
        if remaining or (not image.tags and image.digest not in named):
            kept |= image.manifests
        else:
            gone.add(image.digest)
    manifests = {m for root in gone for m in inventory.tree(root)[0]} - kept
    still_linked = {b for m in kept for b in inventory.manifests[m].links.blobs}
    unused = {b for m in manifests for b in inventory.manifests[m].links.blobs} - still_linked
    return Removal(
        tags=sorted(removed_tags, key=lambda t: t.reference),
        images=sorted(gone, key=str),
        manifests=sorted(manifests, key=str),
        unused_blobs=[inventory.blobs[b] for b in sorted(unused, key=str) if b in inventory.blobs],
    )


def _resolve(inventory: Inventory, target: Target) -> tuple[set[TagEntry], Digest | None]:
    ref = target.reference
    if ref is None:
        return {t for t in inventory.tags if t.record.parsed_digest == target.digest}, target.digest
    same_repo = [
        t for t in inventory.tags if (t.registry, t.repo) == (ref.registry, ref.repository)
    ]
    if ref.tag is not None:
        tags = {t for t in same_repo if t.tag == ref.tag}
        if ref.digest is not None:
            tags = {t for t in tags if t.record.parsed_digest == ref.digest}
        return tags, None
    return {t for t in same_repo if t.record.parsed_digest == ref.digest}, ref.digest


def apply(stores: Stores, removal: Removal) -> None:
    """Remove tags, then manifests, and mark the blobs they alone used as unused (blocking)."""
    for entry in removal.tags:
        stores.tags.remove(entry)
    for digest in removal.manifests:
        stores.manifests.remove(digest)
    for blob in removal.unused_blobs:
        stores.blobs.age(blob.digest)
