"""One eviction pass, run in a helper process of the server (see `helper`).

A pass over a large cache is mostly Python work between short system calls. In a thread of the
serving process it would hold the GIL most of the time it runs, and requests would wait for it;
in a process of its own, at a lower CPU priority, it only takes cycles the server leaves. The
helper keeps what manifests link to between passes (they never change), so a pass after the first
reads only new manifests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mirror.cache.eviction import Freed, Policy, Sweeper, evict
from mirror.cache.inventory import Scanner, Stores
from mirror.cache.lock import UpkeepLock
from mirror.cache.usage import LOW_WATER, Limits, UsageCounter
from mirror.config import SizeLimit
from mirror.oci.digest import Digest


@dataclass(frozen=True, slots=True)
class PassJob:
    root: Path
    max_size: SizeLimit | None
    min_free: SizeLimit | None
    protect_window: float
    pins: tuple[str, ...]
    now: float  # unix time, by the server's clock
    unsent: int  # bytes the server stored and has not counted yet
    urgent: bool  # a write failed for want of space: free a tenth of the cache at least
    spared: frozenset[Digest] = frozenset()  # never evicted (`Evictor.spare`)


@dataclass(frozen=True, slots=True)
class PassResult:
    made: bool  # False: another process holds the upkeep lock
    counted: int | None  # the shared count after the pass
    cap: int | None
    total: int = 0  # bytes before the pass
    need: int = 0
    freed: Freed | None = None
    removed_manifests: tuple[Digest, ...] = ()


# Files a server's pass removes at most per second: about 500 images, far more than pulls add.
# Removing 1,000 images a second cost a saturated 2-core machine's mirror a sixth of its hits.
REMOVALS_PER_SECOND = 2000

_scanners: dict[Path, Scanner] = {}


def run(job: PassJob) -> PassResult:
    """Count what the server stored; then, holding the upkeep lock, walk the cache and evict
    what the limits require (blocking)."""
    limits = Limits(job.root, job.max_size, job.min_free)
    usage = UsageCounter(job.root / "usage")
    counted = usage.add(job.unsent) if limits.active else None
    lock = UpkeepLock(job.root)
    if not lock.try_acquire():
        return PassResult(False, counted, limits.cap(limits.disk()))
    try:
        scanner = _scanners.get(job.root)
        if scanner is None:
            scanner = _scanners[job.root] = Scanner(Stores.at(job.root))
        inventory = scanner.scan()
        # What was pushed is not cache: the cap applies to the rest.
        total = inventory.cached_total
        disk = limits.disk()
        cap = limits.cap(disk)
        need = limits.excess(total, disk)
        if job.urgent:
            need = max(need, int(total * (1 - LOW_WATER)))
        sweeper = Sweeper(scanner.stores, per_second=REMOVALS_PER_SECOND)
        if need or cap is not None:
            policy = Policy(job.protect_window, job.pins, cap, job.spared)
            evict(inventory, need, policy, sweeper, job.now)
        left = total - sweeper.freed.bytes
        if not limits.active:
            pass
        elif counted is None:
            counted = usage.set(left)
        else:
            # A correction rather than a new figure: what other processes counted during the
            # walk stays counted.
            counted = usage.add(left - counted)
        return PassResult(
            True, counted, cap, total, need, sweeper.freed, tuple(sweeper.removed_manifests)
        )
    finally:
        lock.release()
