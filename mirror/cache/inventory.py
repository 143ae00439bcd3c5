"""A snapshot of the whole cache and how it hangs together: which tags name which manifests,
what each manifest links to, and so which images there are, how big and how recently used.

An image is a root manifest with every cached manifest and blob under it. Roots are the
manifests that tags name, and the manifests nothing names (pulled by digest). A child manifest
or a blob shared by several images belongs to each of them.

What the local namespaces hold (pushed images, `mirror.local.store.Holdings`) shares the store
but is not cache: it does not count against the size cap and is never evicted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from cachetools import LRUCache

from mirror.cache.links import Links, links
from mirror.local.store import Holdings, LocalStore
from mirror.oci.digest import Digest
from mirror.storage.blobs import BlobStore
from mirror.storage.files import StoredFile
from mirror.storage.layout import CacheLayout
from mirror.storage.manifests import ManifestStore
from mirror.storage.quarantine import Quarantine
from mirror.storage.spool_files import SpoolFile, SpoolFiles
from mirror.storage.tags import TagEntry, TagStore


@dataclass(frozen=True, slots=True)
class Stores:
    """The stores of one cache directory, as the upkeep uses them."""

    layout: CacheLayout
    blobs: BlobStore
    manifests: ManifestStore
    tags: TagStore
    spool: SpoolFiles
    quarantine: Quarantine

    @classmethod
    def at(cls, root: Path) -> Stores:
        layout = CacheLayout(root)
        return cls(
            layout,
            BlobStore(layout),
            ManifestStore(layout),
            TagStore(layout),
            SpoolFiles(layout),
            Quarantine(layout),
        )


@dataclass(frozen=True, slots=True)
class ManifestFile:
    file: StoredFile  # its size counts the sidecar: bytes on disk
    content_size: int  # the manifest's own bytes
    links: Links


@dataclass(frozen=True, slots=True)
class Image:
    digest: Digest
    tags: tuple[TagEntry, ...]
    manifests: frozenset[Digest]  # the root and every cached manifest under it
    blobs: frozenset[Digest]  # every cached blob under it
    size: int  # content bytes: its manifests and blobs, each once
    last_used: float  # its manifests' last use, or a tag's last pull, whichever is later


@dataclass
class Inventory:
    blobs: dict[Digest, StoredFile]
    manifests: dict[Digest, ManifestFile]
    tags: list[TagEntry]
    spool: list[SpoolFile]
    holdings: Holdings = field(default_factory=Holdings.none)
    _images: list[Image] | None = field(default=None, repr=False)

    @property
    def total(self) -> int:
        """Bytes the cache takes on disk: blobs, manifests with sidecars, downloads in flight."""
        return (
            sum(b.size for b in self.blobs.values())
            + sum(m.file.size for m in self.manifests.values())
            + sum(s.size for s in self.spool)
        )

    @property
    def cached_total(self) -> int:
        """The bytes the size cap applies to: all of `total` but what was pushed."""
        held = self.holdings.everything
        return (
            self.total
            - sum(b.size for d, b in self.blobs.items() if d in held)
            - sum(m.file.size for d, m in self.manifests.items() if d in held)
        )

    def tree(self, root: Digest) -> tuple[frozenset[Digest], frozenset[Digest]]:
        """(manifests, blobs) cached under `root`, the root included."""
        manifests: set[Digest] = set()
        blobs: set[Digest] = set()
        pending = [root]
        while pending:
            digest = pending.pop()
            found = self.manifests.get(digest)
            if digest in manifests or found is None:
                continue
            manifests.add(digest)
            blobs |= found.links.blobs & self.blobs.keys()
            pending += found.links.manifests
        return frozenset(manifests), frozenset(blobs)

    def images(self) -> list[Image]:
        """Every image: tagged roots first by reference, then untagged ones by digest."""
        if self._images is None:
            self._images = [self._image(d, t) for d, t in self._roots().items()]
        return self._images

    def _roots(self) -> dict[Digest, list[TagEntry]]:
        tagged: dict[Digest, list[TagEntry]] = defaultdict(list)
        for entry in self.tags:
            digest = entry.record.parsed_digest
            if digest in self.manifests:
                tagged[digest].append(entry)
        children = {c for m in self.manifests.values() for c in m.links.manifests}
        untagged = sorted(
            (d for d in self.manifests if d not in tagged and d not in children), key=str
        )
        return {**tagged, **{d: [] for d in untagged}}

    def _image(self, root: Digest, tags: Iterable[TagEntry]) -> Image:
        manifests, blobs = self.tree(root)
        tags = tuple(tags)
        size = sum(self.manifests[m].content_size for m in manifests)
        size += sum(self.blobs[b].size for b in blobs)
        used = [self.manifests[m].file.last_used for m in manifests]
        used += [t.pulls.last for t in tags if t.pulls.last is not None]
        return Image(root, tags, manifests, blobs, size, max(used))

    def dangling_tags(self) -> list[TagEntry]:
        """Tags whose manifest is not cached (removed or quarantined): the next pull refetches."""
        return [t for t in self.tags if t.record.parsed_digest not in self.manifests]


# What scans remember of each manifest: its size and what it links to (content-addressed, so
# they never change and a later scan reads only the manifests that are new).
KnownLinks: TypeAlias = LRUCache[Digest, tuple[int, Links]]
REMEMBERED = 200_000


class Scanner:
    """Takes inventories of one cache; remembers what manifests link to, since they never
    change, so that a scan after the first reads only the manifests that are new."""

    def __init__(self, stores: Stores, remembered: int = REMEMBERED) -> None:
        self.stores = stores
        self._links: KnownLinks = LRUCache(remembered)

    def scan(self) -> Inventory:
        """Walk the whole cache (blocking: for the helper process or a command)."""
        # The spool before the blobs: a file committed in between is counted twice rather
        # than not at all.
        spool = list(self.stores.spool.iter_files())
        blobs = {b.digest: b for b in self.stores.blobs.iter_blobs()}
        manifests = {}
        for file in self.stores.manifests.iter_manifests():
            known = self._links.get(file.digest)
            if known is None:
                try:
                    with self.stores.manifests.open_quietly(file.digest) as f:
                        data = f.read()
                except OSError:
                    continue  # removed while we looked
                known = self._links[file.digest] = (len(data), links(data))
            manifests[file.digest] = ManifestFile(file, *known)
        tags = list(self.stores.tags.iter_tags())
        holdings = LocalStore(self.stores.layout).holdings()
        return Inventory(blobs, manifests, tags, spool, holdings)
