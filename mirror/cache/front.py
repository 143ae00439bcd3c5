"""The cache directory in front of a bucket, told what the upkeep removed from the bucket, so
that this host does not go on serving it from its local copy."""

from __future__ import annotations

from mirror.cache.inventory import Stores
from mirror.cache.removal import Removal


def forget(stores: Stores, removal: Removal) -> None:
    """Remove the plan's tags, manifests and blobs from the directory too (blocking); a blob a
    client is reading right now is marked unused instead, for the next collection."""
    for entry in removal.tags:
        stores.tags.remove(entry)
    for digest in removal.manifests:
        stores.manifests.remove(digest)
    for blob in removal.unused_blobs:
        if not stores.blobs.remove(blob.digest):
            stores.blobs.age(blob.digest)
