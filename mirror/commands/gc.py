"""`mirror gc [--dry-run] [--keep-quarantined SECONDS]`: remove what no cached tag leads to
(after the protection window), tags whose manifest is gone, spool debris, what `mirror verify`
set aside longer ago than `--keep-quarantined`, and evict down to the cap; print what it freed.

With `--storage s3://…`, the same garbage in the bucket, eviction down to the bucket's cap
(`[storage] max_size`), and what writers left under `uploads/` (and multipart uploads never
finished), older than the protection window too; then the cache directory in front of it on
this host, if any: the garbage that went from the bucket, then its own gc (what the cap
evicted from the bucket stays there, bounded by the directory's own cap)."""

from __future__ import annotations

import argparse
import math
import time

from mirror.cache.bucket_cap import evict_past_cap
from mirror.cache.collection import collect, collect_debris, collect_quarantine
from mirror.cache.eviction import Freed, Planned, Policy, Sweeper, evict
from mirror.cache.front import forget
from mirror.cache.inventory import Scanner, Stores
from mirror.cache.usage import Limits, UsageCounter
from mirror.commands import Command
from mirror.commands.cachedir import (
    count,
    files_size,
    human_size,
    in_front,
    on_bucket,
    open_cache,
    open_front,
    pruning,
    scan,
)
from mirror.config import ConfigError, S3Settings, Settings
from mirror.config.values import seconds_or_zero
from mirror.storage.s3 import removal as bucket_removal
from mirror.storage.s3.bucket import Bucket
from mirror.storage.s3.removal import Debris, clear_debris


def describe(freed: Freed) -> str:
    parts = [
        count(n, noun)
        for n, noun in (
            (freed.images, "image"),
            (freed.tags, "tag"),
            (freed.manifests, "manifest"),
            (freed.blobs, "blob"),
            (freed.spool, "spool file"),
        )
        if n
    ]
    return f"{', '.join(parts) or 'nothing'} ({human_size(freed.bytes)})"


# How long what verify set aside stays for an operator to look at, by default.
KEEP_QUARANTINED = 7 * 24 * 3600.0


def _run(settings: Settings, args: argparse.Namespace) -> int:
    if settings.storage is not None:
        _bucket(settings, settings.storage, args)
    else:
        _directory(open_cache(settings), settings, args)
    return 0


def _directory(stores: Stores, settings: Settings, args: argparse.Namespace) -> None:
    dry_run = args.dry_run
    limits = Limits(stores.layout.root, settings.max_size, settings.min_free)
    now = time.time()
    # 0: all of it, whenever it was set aside.
    before = now - args.keep_quarantined if args.keep_quarantined else math.inf
    with pruning(stores):
        # First: the room it frees on the disk is room `min_free` need not evict for.
        quarantined = collect_quarantine(stores, before, dry_run=dry_run)
        inventory = Scanner(stores).scan()
        garbage = Sweeper(stores, dry_run=dry_run)
        left = collect_debris(
            collect(inventory, garbage, now, settings.protect_window), garbage, now
        )
        evicted = Sweeper(stores, dry_run=dry_run)
        disk = limits.disk()
        need = limits.excess(left.cached_total, disk)
        cap = limits.cap(disk)
        if need or cap is not None:
            policy = Policy(settings.protect_window, settings.pin, cap)
            evict(left, need, policy, evicted, now)
        if limits.active and not dry_run:
            UsageCounter(stores.layout.root / "usage").set(left.cached_total - evicted.freed.bytes)
    verb = "would remove" if dry_run else "removed"
    print(f"unreferenced: {verb} {describe(garbage.freed)}")
    print(f"over the limits: {verb} {describe(evicted.freed)}")
    if quarantined:
        print(f"quarantine: {verb} {files_size(quarantined)}")
    total = garbage.freed.bytes + evicted.freed.bytes + sum(f.size for f in quarantined)
    print(f"{'would free' if dry_run else 'freed'} {human_size(total)} in total")


def _bucket(settings: Settings, storage: S3Settings, args: argparse.Namespace) -> None:
    """The bucket's garbage, what takes it past its cap, and upload debris; then the cache
    directory in front on this host: first the garbage that went from the bucket, then its
    own."""
    dry_run = args.dry_run
    now = time.time()
    grace = settings.protect_window
    garbage = Planned()

    evicted = Planned()

    async def work(bucket: Bucket) -> Debris:
        left = collect(await scan(bucket, settings), garbage, now, grace)
        evict_past_cap(left, Policy(grace, settings.pin, storage.max_size), evicted, now)
        if not dry_run:
            for plan in (garbage, evicted):
                await bucket_removal.remove(bucket, plan.removal)
        return await clear_debris(bucket, now - grace, dry_run=dry_run)

    debris = on_bucket(storage, work)
    verb = "would remove" if dry_run else "removed"
    print(f"bucket {storage.url}:")
    print(f"unreferenced: {verb} {describe(garbage.freed)}")
    if storage.max_size is not None:
        print(f"over the cap: {verb} {describe(evicted.freed)}")
    print(f"uploads left behind: {verb} {describe_debris(debris)}")
    total = garbage.freed.bytes + evicted.freed.bytes + debris.bytes
    print(f"{'would free' if dry_run else 'freed'} {human_size(total)} in total")
    front = open_front(settings)
    if front is not None:
        if not dry_run:
            with pruning(front):
                forget(front, garbage.removal)
        print()
        print(in_front(front))
        _directory(front, settings, args)


def describe_debris(debris: Debris) -> str:
    parts = [count(debris.objects, "object"), count(debris.multipart, "multipart upload")]
    return f"{' and '.join(parts)} ({human_size(debris.bytes)})"


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    parser.add_argument(
        "--keep-quarantined",
        type=_seconds,
        default=KEEP_QUARANTINED,
        metavar="SECONDS",
        help="keep what verify set aside this long, default 604800 (a week); 0: none of it",
    )


def _seconds(text: str) -> float:
    try:
        return seconds_or_zero("--keep-quarantined", text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


COMMAND = Command("gc", "remove unreferenced content and evict down to the cap", _arguments, _run)
