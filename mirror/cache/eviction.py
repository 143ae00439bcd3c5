"""Which content goes when the cache must shrink, and the removal itself.

The rules, in order:

- a blob larger than the cap is never kept (unless a client is reading it right now);
- pinned images and images used within the protection window are never evicted, nor is anything
  under them: a blob or child manifest shared with an evicted image stays while any image that
  uses it stays;
- the others go whole, least recently used first: tags, then manifests, then the blobs no
  remaining image uses (manifests first, so a pull starting meanwhile fetches a fresh manifest
  rather than find one whose blobs are going);
- blobs no manifest links to go by their own last use;
- what the local namespaces hold (pushed images) is never evicted, nor is a cached image whose
  root was pushed too; nor is what the policy spares (what an import is bringing in);
- a blob that some process is sending is skipped (see `storage.files`), and an image used again
  since the walk that chose it is kept.
"""

from __future__ import annotations

import fnmatch
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from mirror.cache.inventory import Image, Inventory, ManifestFile, Stores
from mirror.cache.removal import Removal
from mirror.oci.digest import Digest
from mirror.storage.files import StoredFile
from mirror.storage.spool_files import SpoolFile
from mirror.storage.tags import TagEntry


@dataclass(frozen=True, slots=True)
class Policy:
    """What eviction spares (recent and pinned images, and content named in `spared`) and the
    cap it keeps to."""

    protect_window: float  # seconds
    pins: tuple[str, ...]  # fnmatch patterns over `registry/repo:tag`
    cap: int | None  # bytes; a blob larger than this is never kept
    spared: frozenset[Digest] = frozenset()  # kept as pushed content is, however old

    def is_pinned(self, image: Image) -> bool:
        return any(fnmatch.fnmatchcase(t.reference, p) for t in image.tags for p in self.pins)


@dataclass
class Freed:
    """What a sweep removed (in a dry run: would remove)."""

    images: int = 0
    tags: int = 0
    manifests: int = 0
    blobs: int = 0
    spool: int = 0
    bytes: int = 0


class Sweep(Protocol):
    """What eviction hands the content it chose to: each item once or more, and it counts."""

    freed: Freed

    def tag(self, entry: TagEntry) -> None: ...

    def manifest(self, digest: Digest, file: ManifestFile) -> None: ...

    def blob(self, file: StoredFile) -> bool:
        """True when the blob is gone (or will be)."""
        ...

    def used_since(self, image: Image, since: float) -> bool: ...


class Planned:
    """Removes nothing: records what eviction chose as a `Removal`, for a store whose removals
    are made afterwards (a bucket's, over the network)."""

    def __init__(self) -> None:
        self.freed = Freed()
        self.removal = Removal(tags=[], images=[], manifests=[], unused_blobs=[])
        self._chosen: set[Digest] = set()

    def tag(self, entry: TagEntry) -> None:
        self.removal.tags.append(entry)
        self.freed.tags += 1

    def manifest(self, digest: Digest, file: ManifestFile) -> None:
        if digest not in self._chosen:
            self._chosen.add(digest)
            self.removal.manifests.append(digest)
            self.freed.manifests += 1
            self.freed.bytes += file.file.size

    def blob(self, file: StoredFile) -> bool:
        if file.digest not in self._chosen:
            self._chosen.add(file.digest)
            self.removal.unused_blobs.append(file)
            self.freed.blobs += 1
            self.freed.bytes += file.size
        return True

    def used_since(self, image: Image, since: float) -> bool:
        """The inventory's recency is all there is to know: it was taken just now."""
        return False


class Sweeper:
    """Removes content and counts it; in a dry run it only counts. Blocking: for the helper
    process or a command. With `per_second`, it removes at most that many files a second: the
    kernel's work on each unlink is not lowered by a process's priority, and a server must not
    feel it."""

    def __init__(
        self, stores: Stores, *, dry_run: bool = False, per_second: int | None = None
    ) -> None:
        self.stores = stores
        self.dry_run = dry_run
        self.freed = Freed()
        self.removed_manifests: list[Digest] = []
        self._gone: set[Digest] = set()
        self._per_second = per_second
        self._second = time.monotonic()
        self._this_second = 0

    def _removing(self, files: int) -> None:
        """Called before each removal; waits for the next second once this one's are spent."""
        if self._per_second is None or self.dry_run:
            return
        now = time.monotonic()
        if now - self._second >= 1:
            self._second, self._this_second = now, 0
        elif self._this_second >= self._per_second:
            time.sleep(1 - (now - self._second))
            self._second, self._this_second = time.monotonic(), 0
        self._this_second += files

    def tag(self, entry: TagEntry) -> None:
        self._removing(2)  # the record and its pull counts
        if self.dry_run or self.stores.tags.remove(entry):
            self.freed.tags += 1

    def manifest(self, digest: Digest, file: ManifestFile) -> None:
        if digest in self._gone:
            return
        self._removing(2)  # the manifest and its sidecar
        if self.dry_run or self.stores.manifests.remove(digest):
            self._gone.add(digest)
            self.removed_manifests.append(digest)
            self.freed.manifests += 1
            self.freed.bytes += file.file.size

    def blob(self, file: StoredFile) -> bool:
        if file.digest in self._gone:
            return True
        self._removing(1)
        if self.dry_run or self.stores.blobs.remove(file.digest):
            self._gone.add(file.digest)
            self.freed.blobs += 1
            self.freed.bytes += file.size
            return True
        return False

    def spool(self, file: SpoolFile, older_than: float) -> None:
        if self.dry_run or self.stores.spool.remove_debris(file, older_than):
            self.freed.spool += 1
            self.freed.bytes += file.size

    def used_since(self, image: Image, since: float) -> bool:
        """Whether the image was used after `since`, looking at the disk as it is now."""
        for digest in image.manifests:
            used = self.stores.manifests.last_used(digest)
            if used is not None and used >= since:
                return True
        for entry in image.tags:
            last = self.stores.tags.pulls(entry).last
            if last is not None and last >= since:
                return True
        return False


def evict(inventory: Inventory, need: int, policy: Policy, sweeper: Sweep, now: float) -> None:
    """Free at least `need` bytes if the rules allow (see the module docstring)."""
    start = sweeper.freed.bytes
    held = inventory.holdings.everything | policy.spared
    if policy.cap is not None:
        for blob in inventory.blobs.values():
            if blob.size > policy.cap and blob.digest not in held:
                sweeper.blob(blob)
    images = inventory.images()
    users = Counter[Digest](held)  # a user that never goes away
    for image in images:
        users.update(image.manifests)
        users.update(image.blobs)
    cutoff = now - policy.protect_window
    unlinked = [b for b in inventory.blobs.values() if users[b.digest] == 0]
    candidates: list[tuple[float, Image | StoredFile]] = [
        (image.last_used, image)
        for image in images
        if image.last_used < cutoff and not policy.is_pinned(image) and image.digest not in held
    ]
    candidates += [(blob.last_used, blob) for blob in unlinked if blob.last_used < cutoff]
    candidates.sort(key=lambda pair: pair[0])
    for _, unit in candidates:
        if sweeper.freed.bytes - start >= need:
            return
        if isinstance(unit, StoredFile):
            sweeper.blob(unit)
        elif not sweeper.used_since(unit, cutoff):
            _evict_image(inventory, unit, users, sweeper)


def _evict_image(
    inventory: Inventory, image: Image, users: Counter[Digest], sweeper: Sweep
) -> None:
    sweeper.freed.images += 1
    for entry in image.tags:
        sweeper.tag(entry)
    # The root first: from then on nothing resolves to this tree.
    for digest in _root_first(image.digest, image.manifests):
        users[digest] -= 1
        if users[digest] == 0:
            sweeper.manifest(digest, inventory.manifests[digest])
    for digest in image.blobs:
        users[digest] -= 1
        if users[digest] == 0:
            sweeper.blob(inventory.blobs[digest])


def _root_first(root: Digest, manifests: Iterable[Digest]) -> list[Digest]:
    return [root, *sorted((m for m in manifests if m != root), key=str)]
