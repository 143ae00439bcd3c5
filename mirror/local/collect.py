"""Collecting what nothing uses: blobs and manifests that no pushed manifest and no cached tag
leads to, once they are older than a grace period.

What a collector must keep, whichever one runs (this one, or the cache's `mirror gc`):

- `LocalStore.holdings()`: every manifest pushed to a local namespace, what it references, and,
  within the grace period, blobs linked into a local repository that no manifest names yet
  (a push uploads its blobs before its manifest);
- every manifest a cached tag names (`tags/<registry>/<repo>/_tags/*`), with its children and
  blobs;
- anything written within the grace period (a pull by digest stores a manifest no tag names,
  and its blobs come after it);
- `uploads/` entirely: sessions expire by themselves (`UploadSessions.expire`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mirror.errors import DigestInvalid
from mirror.local.store import LocalStore
from mirror.oci.contents import InvalidManifest, read_contents
from mirror.oci.digest import Digest
from mirror.storage.layout import CacheLayout


@dataclass(frozen=True, slots=True)
class Collected:
    manifests: int
    blobs: int
    bytes: int


def collect(layout: CacheLayout, *, now: float, grace: float) -> Collected:
    """Remove unused content older than `grace` seconds (blocking: a walk of the cache)."""
    holdings = LocalStore(layout).holdings()
    keep_manifests = set(holdings.manifests)
    keep_blobs = set(holdings.blobs)
    pending, seen = list(_tagged(layout)), set()
    while pending:
        digest = pending.pop()
        if digest in seen:
            continue
        seen.add(digest)
        keep_manifests.add(digest)
        try:
            contents = read_contents(layout.manifest(digest).read_bytes())
        except (OSError, InvalidManifest):
            continue
        keep_blobs.update(d.digest for d in contents.blobs)
        pending += [d.digest for d in contents.manifests]
    cutoff = now - grace
    removed_manifests = removed_blobs = freed = 0
    for digest, path in _content(layout.root / "manifests"):
        if digest in keep_manifests or holdings.keeps(digest, now=now, grace=grace):
            continue
        if (size := _removed_if_older(path, cutoff)) is not None:
            Path(f"{path}.json").unlink(missing_ok=True)
            removed_manifests += 1
            freed += size
    for digest, path in _content(layout.root / "blobs"):
        if digest in keep_blobs or holdings.keeps(digest, now=now, grace=grace):
            continue
        if (size := _removed_if_older(path, cutoff)) is not None:
            removed_blobs += 1
            freed += size
    return Collected(removed_manifests, removed_blobs, freed)


def _tagged(layout: CacheLayout) -> Iterator[Digest]:
    """The digest of every tag record, cached or pushed."""
    for directory, subdirs, files in os.walk(layout.root / "tags"):
        if os.path.basename(directory) == "_tags":
            for name in files:
                try:
                    raw = json.loads((Path(directory) / name).read_bytes())
                    yield Digest.parse(raw["digest"])
                except (OSError, ValueError, KeyError, TypeError, DigestInvalid):
                    continue  # damaged or removed meanwhile: it keeps nothing
        subdirs[:] = [d for d in subdirs if d == "_tags" or not d.startswith("_")]


def _content(top: Path) -> Iterator[tuple[Digest, Path]]:
    """(digest, file) of `<top>/<alg>/<xx>/<hex>`."""
    for directory, _subdirs, files in os.walk(top):
        algorithm = os.path.basename(os.path.dirname(directory))
        for name in files:
            try:
                yield Digest.parse(f"{algorithm}:{name}"), Path(directory) / name
            except DigestInvalid:
                continue  # a sidecar, or a stray file


def _removed_if_older(path: Path, cutoff: float) -> int | None:
    try:
        stat = path.stat()
        if stat.st_mtime >= cutoff:
            return None
        path.unlink()
    except OSError:
        return None
    return stat.st_size
