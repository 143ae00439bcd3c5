"""`mirror du`: how much the cache holds, by registry, against its cap and its disk."""

from __future__ import annotations

import argparse

from mirror.cache.inventory import Inventory, Scanner
from mirror.cache.usage import Disk, Limits
from mirror.commands import Command
from mirror.commands.cachedir import human_size, open_cache, table
from mirror.config import Settings
from mirror.oci.digest import Digest


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


def _run(settings: Settings, _args: argparse.Namespace) -> int:
    stores = open_cache(settings)
    inventory = Scanner(stores).scan()
    limits = Limits(stores.layout.root, settings.max_size, settings.min_free)
    print(table(["REGISTRY", "TAGS", "IMAGES", "SIZE"], by_registry(inventory)))
    print()
    print(summary(inventory.total, limits, limits.disk()))
    print("content shared by registries counts under each of them, and once in the total")
    return 0


COMMAND = Command("du", "show the cache's size by registry, against its cap", lambda _p: None, _run)
