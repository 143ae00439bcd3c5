"""`mirror gc [--dry-run]`: remove what no cached tag leads to (after the protection window),
tags whose manifest is gone, spool debris, and evict down to the cap; print what it freed."""

from __future__ import annotations

import argparse
import time

from mirror.cache.collection import collect
from mirror.cache.eviction import Freed, Policy, Sweeper, evict
from mirror.cache.inventory import Scanner
from mirror.cache.lock import UpkeepLock
from mirror.cache.usage import Limits, UsageCounter
from mirror.commands import Command, CommandError
from mirror.commands.cachedir import LOCK_WAIT, count, human_size, open_cache
from mirror.config import Settings


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


def _run(settings: Settings, args: argparse.Namespace) -> int:
    stores = open_cache(settings)
    limits = Limits(stores.layout.root, settings.max_size, settings.min_free)
    now = time.time()
    with UpkeepLock(stores.layout.root) as lock:
        if not lock.acquire(LOCK_WAIT):
            raise CommandError("another process is pruning the cache; try again later")
        inventory = Scanner(stores).scan()
        garbage = Sweeper(stores, dry_run=args.dry_run)
        left = collect(inventory, garbage, now, settings.protect_window)
        evicted = Sweeper(stores, dry_run=args.dry_run)
        disk = limits.disk()
        need = limits.excess(left.cached_total, disk)
        cap = limits.cap(disk)
        if need or cap is not None:
            policy = Policy(settings.protect_window, settings.pin, cap)
            evict(left, need, policy, evicted, now)
        if limits.active and not args.dry_run:
            UsageCounter(stores.layout.root / "usage").set(left.cached_total - evicted.freed.bytes)
    verb = "would remove" if args.dry_run else "removed"
    print(f"unreferenced: {verb} {describe(garbage.freed)}")
    print(f"over the limits: {verb} {describe(evicted.freed)}")
    total = garbage.freed.bytes + evicted.freed.bytes
    print(f"{'would free' if args.dry_run else 'freed'} {human_size(total)} in total")
    return 0


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")


COMMAND = Command("gc", "remove unreferenced content and evict down to the cap", _arguments, _run)
