"""Garbage: content that no cached tag and no local namespace leads to, the debris of writers
that died, and what `mirror verify` set aside long enough ago.

Unreferenced content is kept while it was used within the grace period: a pull by digest stores
a manifest no tag names, and its blobs arrive after it; a tag that moved leaves its old manifest
to the pulls that resolved it a moment ago.
"""

from __future__ import annotations

from mirror.cache.eviction import Sweep, Sweeper
from mirror.cache.inventory import Inventory, Stores
from mirror.oci.digest import Digest
from mirror.storage.quarantine import QuarantinedFile

# A writer opens its spool file a moment before it locks it; a minute is plenty.
SPOOL_GRACE = 60.0


def collect(inventory: Inventory, sweeper: Sweep, now: float, grace: float) -> Inventory:
    """Remove what no tag leads to and nobody used within `grace` seconds, and tags whose
    manifest is gone; returns the inventory without what was removed."""
    cutoff = now - grace
    holdings = inventory.holdings
    kept: set[Digest] = {d for d in holdings.manifests if d in inventory.manifests}
    for entry in inventory.tags:
        kept |= inventory.tree(entry.record.parsed_digest)[0]
    loose = [d for d in inventory.manifests if d not in kept]
    for digest in loose:
        if inventory.manifests[digest].file.last_used >= cutoff:
            kept |= inventory.tree(digest)[0]
    for digest in loose:
        if digest not in kept:
            sweeper.manifest(digest, inventory.manifests[digest])
    linked = {b for d in kept for b in inventory.manifests[d].links.blobs}
    blobs = {
        digest: blob
        for digest, blob in inventory.blobs.items()
        if digest in linked
        or blob.last_used >= cutoff
        or holdings.keeps(digest, now=now, grace=grace)
        or not sweeper.blob(blob)
    }
    dangling = inventory.dangling_tags()
    for entry in dangling:
        sweeper.tag(entry)
    return Inventory(
        blobs,
        {d: m for d, m in inventory.manifests.items() if d in kept},
        [t for t in inventory.tags if t not in dangling],
        inventory.spool,
        holdings,
    )


def collect_debris(inventory: Inventory, sweeper: Sweeper, now: float) -> Inventory:
    """Remove the spool files of writers that died; returns the inventory without them."""
    debris = [s for s in inventory.spool if sweeper.stores.spool.is_debris(s, now - SPOOL_GRACE)]
    for file in debris:
        sweeper.spool(file, now - SPOOL_GRACE)
    spool = [s for s in inventory.spool if s not in debris]
    return Inventory(
        inventory.blobs, inventory.manifests, inventory.tags, spool, inventory.holdings
    )


def collect_quarantine(
    stores: Stores, older_than: float, *, dry_run: bool = False
) -> list[QuarantinedFile]:
    """Remove what verify set aside before `older_than` (unix time); returns what went (in a
    dry run: what would go)."""
    old = [f for f in stores.quarantine.iter_files() if f.since < older_than]
    return old if dry_run else [f for f in old if stores.quarantine.remove(f, older_than)]
