"""`mirror rm REF...`: remove tags and images from the cache; the blobs they alone used go at the
next `mirror gc`."""

from __future__ import annotations

import argparse

from mirror.cache import removal
from mirror.cache.inventory import Scanner
from mirror.cache.lock import UpkeepLock
from mirror.cache.removal import NotCached, Target
from mirror.commands import Command, CommandError
from mirror.commands.cachedir import LOCK_WAIT, count, human_size, open_cache
from mirror.config import Settings
from mirror.errors import DigestInvalid
from mirror.oci.digest import Digest
from mirror.oci.reference import InvalidReference, parse_reference


def parse_target(text: str) -> Target:
    """`registry/repo:tag`, `registry/repo@digest` (as docker writes them), or a bare digest."""
    if text.startswith(("sha256:", "sha512:")):
        try:
            return Target(None, Digest.parse(text))
        except DigestInvalid as e:
            raise CommandError(e.message) from None
    try:
        return Target(parse_reference(text))
    except InvalidReference as e:
        raise CommandError(str(e)) from None


def _run(settings: Settings, args: argparse.Namespace) -> int:
    targets = [parse_target(text) for text in args.references]
    local = {namespace.name for namespace in settings.local}
    for target in targets:
        if target.reference is not None and target.reference.registry in local:
            raise CommandError(
                f"{target}: {target.reference.registry} is a local namespace, not cache; "
                "delete pushed images through the registry API (DELETE /v2/.../manifests/...)"
            )
    stores = open_cache(settings)
    with UpkeepLock(stores.layout.root) as lock:
        if not lock.acquire(LOCK_WAIT):
            raise CommandError("another process is pruning the cache; try again later")
        inventory = Scanner(stores).scan()
        try:
            plan = removal.plan(inventory, targets)
        except NotCached as e:
            raise CommandError(str(e)) from None
        removal.apply(stores, plan)
    for entry in plan.tags:
        print(f"untagged {entry.reference}")
    for digest in plan.images:
        print(f"deleted {digest}")
    unused = sum(b.size for b in plan.unused_blobs)
    print(
        f"removed {count(len(plan.tags), 'tag')} and {count(len(plan.images), 'image')} "
        f"({count(len(plan.manifests), 'manifest')}); {count(len(plan.unused_blobs), 'blob')} "
        f"({human_size(unused)}) go at the next gc"
    )
    return 0


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "references",
        nargs="+",
        metavar="REF",
        help="docker.io/library/alpine:3.20, ghcr.io/org/app@sha256:..., or sha256:...",
    )


COMMAND = Command("rm", "remove tags and images from the cache", _arguments, _run)
