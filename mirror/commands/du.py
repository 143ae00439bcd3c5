"""`mirror du`: how much the cache holds, by registry, against its cap and its disk, and what
`mirror verify` set aside; with `--storage s3://…`, the cache directory in front and what the
bucket holds."""

from __future__ import annotations

import argparse

from mirror.cache.inventory import Inventory, Scanner, Stores
from mirror.cache.usage import Limits
from mirror.commands import Command
from mirror.commands.cachedir import (
    count,
    files_size,
    human_size,
    in_front,
    on_bucket,
    open_cache,
    open_front,
    table,
)
from mirror.config import S3Settings, Settings
from mirror.oci.digest import Digest
from mirror.storage.disk import Disk
from mirror.storage.s3.usage import BucketUsage, bucket_usage


def by_registry(inventory: Inventory) -> list[list[str]]:
    """Rows: each registry (the content its tags lead to), images no tag names, blobs no
    manifest links to, and downloads in flight."""
    content: dict[str, set[Digest]] = {}
    tags: dict[str, int] = {}
    images: dict[str, int] = {}
    untagged: set[Digest] = set()
    untagged_images = 0
    for image in inventory.images():
        registries = {t.registry for t in image.tags}
        for registry in registries:
            content.setdefault(registry, set()).update(image.manifests | image.blobs)
            images[registry] = images.get(registry, 0) + 1
        for entry in image.tags:
            tags[entry.registry] = tags.get(entry.registry, 0) + 1
        if not registries:
            untagged |= image.manifests | image.blobs
            untagged_images += 1
    linked = {b for m in inventory.manifests.values() for b in m.links.blobs}
    rows = [
        [registry, str(tags[registry]), str(images[registry]), human_size(_bytes(inventory, d))]
        for registry, d in sorted(content.items())
    ]
    if untagged:
        rows.append(
            ["(untagged)", "-", str(untagged_images), human_size(_bytes(inventory, untagged))]
        )
    unlinked = [b.size for d, b in inventory.blobs.items() if d not in linked]
    if unlinked:
        rows.append(["(unreferenced blobs)", "-", "-", human_size(sum(unlinked))])
    if inventory.spool:
        rows.append(["(downloads)", "-", "-", human_size(sum(s.size for s in inventory.spool))])
    return rows


def _bytes(inventory: Inventory, digests: set[Digest]) -> int:
    return sum(
        inventory.manifests[d].file.size if d in inventory.manifests else inventory.blobs[d].size
        for d in digests
    )


def summary(total: int, limits: Limits, disk: Disk) -> str:
    cap = limits.cap(disk)
    line = f"total {human_size(total)}"
    if cap is not None:
        line += f" of a {human_size(cap)} cap ({total * 100 // max(cap, 1)}%)"
    line += f"; disk {human_size(disk.free)} free of {human_size(disk.total)}"
    keep_free = limits.keep_free(disk)
    if keep_free is not None:
        line += f" (keeping {human_size(keep_free)} free)"
    return line


def in_bucket(url: str, usage: BucketUsage) -> str:
    """One line: the bucket's blobs, manifests and tag records, what else is there, the total."""
    line = (
        f"bucket {url}: {count(usage.blobs.count, 'blob')} {human_size(usage.blobs.bytes)}, "
        f"{count(usage.manifests.count, 'manifest')} {human_size(usage.manifests.bytes)}, "
        f"{count(usage.tags.count, 'tag')}"
    )
    if usage.uploads.count:
        line += f", {count(usage.uploads.count, 'upload')} in progress"
        line += f" {human_size(usage.uploads.bytes)}"
    if usage.other.count:
        line += f", {count(usage.other.count, 'other object')} {human_size(usage.other.bytes)}"
    return line + f"; {human_size(usage.total)} in all"


def _directory(stores: Stores, settings: Settings) -> None:
    inventory = Scanner(stores).scan()
    limits = Limits(stores.layout.root, settings.max_size, settings.min_free)
    print(table(["REGISTRY", "TAGS", "IMAGES", "SIZE"], by_registry(inventory)))
    print()
    print(summary(inventory.total, limits, limits.disk()))
    print("content shared by registries counts under each of them, and once in the total")
    quarantined = list(stores.quarantine.iter_files())
    if quarantined:
        print(
            f"quarantine: {files_size(quarantined)} set aside by verify, outside the total and "
            "the cap (see gc --keep-quarantined)"
        )


def _bucket(storage: S3Settings, settings: Settings) -> None:
    """The cache directory in front, when there is one, then the bucket's totals (a listing
    of its keys: a breakdown by registry would read every tag record and manifest)."""
    usage = on_bucket(storage, bucket_usage)
    front = open_front(settings)
    if front is not None:
        print(in_front(front))
        _directory(front, settings)
        print()
    print(in_bucket(storage.url, usage))


def _run(settings: Settings, _args: argparse.Namespace) -> int:
    if settings.storage is not None:
        _bucket(settings.storage, settings)
    else:
        _directory(open_cache(settings), settings)
    return 0


COMMAND = Command("du", "show the cache's size by registry, against its cap", lambda _p: None, _run)
