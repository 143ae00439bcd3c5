"""What the local namespaces hold, on disk beside the cache, and what of the shared store they
keep alive.

```
<cache-dir>/local/<namespace>/<repository>/
  _blobs/<alg>/<hex>                        the repository holds this blob (uploaded or mounted)
  _manifests/<alg>/<hex>                    a manifest pushed to it: media type, size, subject,
                                            and the digests it references
  _referrers/<alg>/<subject hex>/<alg>-<hex>  the referrers descriptor of a pushed manifest whose
                                            `subject` is that digest (OCI distribution-spec
                                            "Listing Referrers")
<cache-dir>/tags/<namespace>/<repository>/_tags/<tag>   its tags, as the cache's tag records
```

The content itself (`blobs/`, `manifests/`) is the cache's content-addressed store, shared with
mirrored content. These files are links into it: deleting a manifest or a blob from a
repository removes the link, and the content goes when `mirror gc` finds nothing that uses it.
No repository component can be named `_blobs` or `_manifests` (the name grammar starts
components with `[a-z0-9]`), so a link never collides with a deeper repository.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror.errors import DigestInvalid
from mirror.oci.digest import Digest
from mirror.storage.catalog import CatalogStamp
from mirror.storage.layout import CacheLayout, write_atomically


@dataclass(frozen=True, slots=True)
class Revision:
    """A manifest pushed to a repository, with what `gc` and the referrers API need of it."""

    media_type: str
    size: int
    subject: Digest | None
    manifests: tuple[Digest, ...]  # child manifests (an index's entries)
    blobs: tuple[Digest, ...]  # config and layers

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "mediaType": self.media_type,
                "size": self.size,
                "subject": None if self.subject is None else str(self.subject),
                "manifests": [str(d) for d in self.manifests],
                "blobs": [str(d) for d in self.blobs],
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Revision:
        raw = json.loads(data)
        subject = raw.get("subject")
        return cls(
            str(raw["mediaType"]),
            int(raw["size"]),
            None if subject is None else Digest.parse(subject),
            tuple(Digest.parse(d) for d in raw["manifests"]),
            tuple(Digest.parse(d) for d in raw["blobs"]),
        )


@dataclass(frozen=True, slots=True)
class Holdings:
    """What the local namespaces keep of the shared store: `mirror gc` and eviction must leave
    all of it. A blob that is only linked (uploaded, no manifest names it yet) is kept while its
    link is younger than the grace period: the push that uploaded it is still under way."""

    manifests: frozenset[Digest]  # every pushed manifest and every manifest it references
    blobs: frozenset[Digest]  # every blob those manifests reference
    linked: dict[Digest, float]  # blobs linked into a repository: the newest link's time

    @classmethod
    def none(cls) -> Holdings:
        return cls(frozenset(), frozenset(), {})

    @property
    def everything(self) -> frozenset[Digest]:
        """What the size cap never evicts: every pushed manifest and blob, linked ones too."""
        return self.manifests | self.blobs | self.linked.keys()

    def keeps(self, digest: Digest, *, now: float, grace: float) -> bool:
        """Whether `digest` (a blob or a manifest) must stay."""
        if digest in self.manifests or digest in self.blobs:
            return True
        linked = self.linked.get(digest)
        return linked is not None and linked >= now - grace


class LocalStore:
    """The links of every local namespace. Blocking: call it from a thread, except the stat
    calls marked cheap."""

    def __init__(self, layout: CacheLayout) -> None:
        self._layout = layout
        self.root = layout.root / "local"
        # The catalog lists the repositories that hold a manifest: adding or removing one
        # replaces its stamp.
        self._catalog = CatalogStamp(layout)

    def _repo(self, registry: str, repo: str) -> Path:
        return self.root / registry / repo

    def _blob_link(self, registry: str, repo: str, digest: Digest) -> Path:
        return self._repo(registry, repo) / "_blobs" / digest.algorithm / digest.hex

    def _revision(self, registry: str, repo: str, digest: Digest) -> Path:
        return self._repo(registry, repo) / "_manifests" / digest.algorithm / digest.hex

    def _referrers(self, registry: str, repo: str, subject: Digest) -> Path:
        return self._repo(registry, repo) / "_referrers" / subject.algorithm / subject.hex

    # Blobs

    def has_blob(self, registry: str, repo: str, digest: Digest) -> bool:
        """Whether the repository holds the blob (a stat: cheap enough for the loop)."""
        return self._blob_link(registry, repo, digest).exists()

    def link_blob(self, registry: str, repo: str, digest: Digest) -> None:
        path = self._blob_link(registry, repo, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()  # a new link, or a fresh time on an old one (gc's grace counts from it)

    def unlink_blob(self, registry: str, repo: str, digest: Digest) -> bool:
        try:
            self._blob_link(registry, repo, digest).unlink()
        except FileNotFoundError:
            return False
        return True

    # Manifests

    def revision(self, registry: str, repo: str, digest: Digest) -> Revision | None:
        try:
            return Revision.from_json(self._revision(registry, repo, digest).read_bytes())
        except (OSError, ValueError, KeyError, TypeError, DigestInvalid):
            return None

    def add_revision(
        self,
        registry: str,
        repo: str,
        digest: Digest,
        revision: Revision,
        referrer: dict[str, Any] | None,
    ) -> None:
        """Record a pushed manifest; its referrers entry first, so that a manifest is never
        listed by the repository without being listed under its subject."""
        if revision.subject is not None and referrer is not None:
            entry = self._referrers(registry, repo, revision.subject) / _entry_name(digest)
            write_atomically(self._layout, entry, json.dumps(referrer).encode())
        path = self._revision(registry, repo, digest)
        write_atomically(self._layout, path, revision.to_json())
        self._catalog.change()

    def remove_revision(self, registry: str, repo: str, digest: Digest) -> Revision | None:
        """Forget a pushed manifest (and its referrers entry); None if it was not there."""
        found = self.revision(registry, repo, digest)
        if found is None:
            return None
        with contextlib.suppress(FileNotFoundError):
            self._revision(registry, repo, digest).unlink()
        self._catalog.change()
        if found.subject is not None:
            entry = self._referrers(registry, repo, found.subject) / _entry_name(digest)
            entry.unlink(missing_ok=True)
        return found

    def referrers(self, registry: str, repo: str, subject: Digest) -> list[dict[str, Any]]:
        """The descriptors of the repository's manifests whose subject is `subject`, in a
        stable order (by digest)."""
        directory = self._referrers(registry, repo, subject)
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            return []
        found = []
        for name in names:
            try:
                found.append(json.loads((directory / name).read_bytes()))
            except (OSError, ValueError):
                continue  # removed meanwhile, or a write that never finished
        return found

    # Tags (the cache's tag records, under the namespace's name)

    def untag(self, registry: str, repo: str, tag: str) -> bool:
        try:
            self._layout.tag(registry, repo, tag).unlink()
        except FileNotFoundError:
            return False
        return True

    # Listing

    def has_repository(self, registry: str, repo: str) -> bool:
        """Whether anything was pushed to the repository (a manifest, or a blob)."""
        base = self._repo(registry, repo)
        return any(_non_empty(base / kind) for kind in ("_manifests", "_blobs"))

    def repositories(self, registry: str) -> list[str]:
        """The namespace's repositories that hold at least one manifest."""
        found = []
        for repo, base in self._walk(registry):
            if _non_empty(base / "_manifests"):
                found.append(repo)
        return sorted(found)

    def _walk(self, registry: str) -> Iterator[tuple[str, Path]]:
        top = self.root / registry
        for directory, subdirs, _files in os.walk(top):
            if "_manifests" in subdirs or "_blobs" in subdirs:
                yield os.path.relpath(directory, top), Path(directory)
            subdirs[:] = [d for d in subdirs if not d.startswith("_")]

    def holdings(self) -> Holdings:
        """Everything the local namespaces keep (see `Holdings`): a walk of `local/`."""
        manifests: set[Digest] = set()
        blobs: set[Digest] = set()
        linked: dict[Digest, float] = {}
        try:
            registries = [entry.name for entry in os.scandir(self.root) if entry.is_dir()]
        except OSError:
            registries = []
        for registry in registries:
            for _repo, base in self._walk(registry):
                for digest, path in _links(base / "_manifests"):
                    manifests.add(digest)
                    try:
                        revision = Revision.from_json(path.read_bytes())
                    except (OSError, ValueError, KeyError, TypeError, DigestInvalid):
                        continue
                    manifests.update(revision.manifests)
                    blobs.update(revision.blobs)
                for digest, path in _links(base / "_blobs"):
                    with contextlib.suppress(OSError):
                        linked[digest] = max(linked.get(digest, 0.0), path.stat().st_mtime)
        return Holdings(frozenset(manifests), frozenset(blobs), linked)


def _entry_name(digest: Digest) -> str:
    return f"{digest.algorithm}-{digest.hex}"


def _non_empty(directory: Path) -> bool:
    """Whether `<directory>/<alg>/` holds any link."""
    try:
        subdirs = [entry.path for entry in os.scandir(directory)]
    except OSError:
        return False
    for subdir in subdirs:
        with contextlib.suppress(OSError), os.scandir(subdir) as entries:
            if next(entries, None) is not None:
                return True
    return False


def _links(directory: Path) -> Iterator[tuple[Digest, Path]]:
    """(digest, file) of every link under `<directory>/<alg>/<hex>`."""
    try:
        algorithms = [(entry.name, entry.path) for entry in os.scandir(directory)]
    except OSError:
        return
    for algorithm, path in algorithms:
        try:
            entries = [(entry.name, entry.path) for entry in os.scandir(path)]
        except OSError:
            continue
        for name, file in entries:
            try:
                yield Digest.parse(f"{algorithm}:{name}"), Path(file)
            except DigestInvalid:
                continue  # not a link (a stray file)
