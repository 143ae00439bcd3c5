"""`mirror rm REF...`: remove tags and images from the cache; the blobs they alone used go at the
next `mirror gc`. With `--storage s3://…`, from the bucket, blobs included, and from the cache
directory in front of it on this host."""

from __future__ import annotations

import argparse

from mirror.cache import removal
from mirror.cache.front import forget
from mirror.cache.inventory import Inventory, Scanner
from mirror.cache.removal import NotCached, Removal, Target
from mirror.commands import Command, CommandError
from mirror.commands.cachedir import (
    count,
    human_size,
    on_bucket,
    open_cache,
    open_front,
    pruning,
    scan,
)
from mirror.config import S3Settings, Settings
from mirror.errors import DigestInvalid
from mirror.oci.digest import Digest
from mirror.oci.reference import InvalidReference, parse_reference
from mirror.storage.s3 import removal as bucket_removal
from mirror.storage.s3.bucket import Bucket


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
    if settings.storage is not None:
        plan = _remove_from_bucket(settings, settings.storage, targets)
        blobs = "removed with them"
    else:
        stores = open_cache(settings)
        with pruning(stores):
            plan = _plan(Scanner(stores).scan(), targets)
            removal.apply(stores, plan)
        blobs = "go at the next gc"
    for entry in plan.tags:
        print(f"untagged {entry.reference}")
    for digest in plan.images:
        print(f"deleted {digest}")
    unused = sum(b.size for b in plan.unused_blobs)
    print(
        f"removed {count(len(plan.tags), 'tag')} and {count(len(plan.images), 'image')} "
        f"({count(len(plan.manifests), 'manifest')}); {count(len(plan.unused_blobs), 'blob')} "
        f"({human_size(unused)}) {blobs}"
    )
    return 0


def _plan(inventory: Inventory, targets: list[Target]) -> Removal:
    try:
        return removal.plan(inventory, targets)
    except NotCached as e:
        raise CommandError(str(e)) from None


def _remove_from_bucket(settings: Settings, storage: S3Settings, targets: list[Target]) -> Removal:
    """Remove from the bucket, blobs no other image uses included (nothing there marks them
    unused for a later gc), then from the cache directory in front on this host."""

    async def work(bucket: Bucket) -> Removal:
        plan = _plan(await scan(bucket, settings), targets)
        await bucket_removal.remove(bucket, plan)
        return plan

    plan = on_bucket(storage, work)
    front = open_front(settings)
    if front is not None:
        with pruning(front):
            forget(front, plan)
    return plan


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "references",
        nargs="+",
        metavar="REF",
        help="docker.io/library/alpine:3.20, ghcr.io/org/app@sha256:..., or sha256:...",
    )


COMMAND = Command("rm", "remove tags and images from the cache", _arguments, _run)
