"""Tag records: the last known tag → digest mapping, with each tag's pull count and last pull
time beside it, and each repository's last tag list from its upstream, kept on disk so all of it
survives restarts."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from mirror import log
from mirror.errors import DigestInvalid, StorageUnavailable, TagInvalid
from mirror.oci.digest import Digest
from mirror.oci.names import validate_tag
from mirror.storage.backend import TagBackend
from mirror.storage.catalog import CatalogStamp
from mirror.storage.layout import CacheLayout, write_atomically

_TAGS = "_tags"
# Pull counts live beside the records, in a directory no repository component can be named.
_PULLS = "_pulls"
# The latest last pull a record may hold: 9999-12-31T23:59:59Z, the last second a date shows.
_LATEST = 253_402_300_799.0
# The most a kept tag list takes (its JSON): no size cap counts these files, so each is bounded
# instead, at what real repositories need (Docker Hub's largest list some tens of thousands of
# tags, 1-2 MiB). A longer list is served but not kept.
MAX_KEPT_LIST = 2 << 20


@dataclass(frozen=True, slots=True)
class TagRecord:
    digest: str
    media_type: str
    fetched_at: float

    @property
    def parsed_digest(self) -> Digest:
        return Digest.parse(self.digest)


@dataclass(frozen=True, slots=True)
class Pulls:
    """How often a tag was pulled through the mirror, and when last (unix time)."""

    count: int = 0
    last: float | None = None


@dataclass(frozen=True, slots=True)
class TagEntry:
    """A cached tag as the upkeep walks them."""

    registry: str
    repo: str
    tag: str
    record: TagRecord
    pulls: Pulls

    @property
    def reference(self) -> str:
        return f"{self.registry}/{self.repo}:{self.tag}"


class TagStore:
    """Tag records and tag lists under `tags/<registry>/<repository>/`; with a `shared` store
    behind the directory (the bucket), what the directory lacks is read from there (and kept),
    and what is written goes there too. A repository's first tag and its last one's removal
    replace the catalog's stamp, since the catalog lists repositories by them."""

    def __init__(self, layout: CacheLayout, shared: TagBackend | None = None) -> None:
        self._layout = layout
        self._shared = shared
        self._catalog = CatalogStamp(layout)

    async def get(self, upstream: str, repo: str, tag: str) -> TagRecord | None:
        found = await asyncio.to_thread(self._read, upstream, repo, tag)
        if found is None and self._shared is not None:
            found = await self._shared.get(upstream, repo, tag)
            if found is not None:
                with contextlib.suppress(OSError):  # a copy: the shared store has it
                    await asyncio.to_thread(self._write, upstream, repo, tag, found)
        return found

    async def put(
        self, upstream: str, repo: str, tag: str, digest: Digest, media_type: str
    ) -> None:
        if self._shared is not None:
            with _unless_unavailable("tags"):
                await self._shared.put(upstream, repo, tag, digest, media_type)
        record = TagRecord(str(digest), media_type, time.time())
        await asyncio.to_thread(self._write, upstream, repo, tag, record)

    def _write(self, upstream: str, repo: str, tag: str, record: TagRecord) -> None:
        data = json.dumps(asdict(record)).encode()
        path = self._layout.tag(upstream, repo, tag)
        new = not path.exists()
        write_atomically(self._layout, path, data)
        if new:  # perhaps the repository's first: revalidations leave the catalog as it is
            self._catalog.change()

    def _read(self, upstream: str, repo: str, tag: str) -> TagRecord | None:
        return _read_record(self._layout.tag(upstream, repo, tag))

    def add_pulls(self, upstream: str, repo: str, tag: str, count: int, last: float) -> None:
        """Add to a cached tag's pull count: a read-modify-write under a lock, since every
        process on the cache directory counts the pulls it serves."""
        record = self._layout.tag(upstream, repo, tag)
        if not record.exists():
            return  # removed meanwhile
        path = _pulls_path(record)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            old = _parse_pulls(os.pread(fd, 4096, 0))
            new = Pulls(old.count + count, max(last, old.last or 0.0))
            data = json.dumps({"count": new.count, "last": new.last}).encode()
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)

    def iter_tags(self) -> Iterator[TagEntry]:
        """Every cached tag with its pull counts (a walk of the tree: for upkeep only)."""
        root = self._layout.root / "tags"
        for registry in sorted(_names(root)):
            for directory, subdirs, names in os.walk(root / registry):
                # Repository components never start with "_": those are ours.
                subdirs[:] = sorted(d for d in subdirs if d == _TAGS or not d.startswith("_"))
                here = Path(directory)
                if here.name != _TAGS or here.parent == root / registry:
                    continue
                repo = here.parent.relative_to(root / registry).as_posix()
                for tag in sorted(names):
                    record = _read_record(here / tag)
                    if record is not None and _is_tag(tag):
                        pulls = _read_pulls(_pulls_path(here / tag))
                        yield TagEntry(registry, repo, tag, record, pulls)

    def pulls(self, entry: TagEntry) -> Pulls:
        """The tag's pull counts as they are now."""
        return _read_pulls(_pulls_path(self._layout.tag(entry.registry, entry.repo, entry.tag)))

    def remove(self, entry: TagEntry) -> bool:
        """Remove a tag's record and counts, unless it moved to another digest meanwhile."""
        path = self._layout.tag(entry.registry, entry.repo, entry.tag)
        current = _read_record(path)
        if current is None or current.digest != entry.record.digest:
            return False
        with contextlib.suppress(OSError):
            _pulls_path(path).unlink()
        try:
            path.unlink()
        except OSError:
            return False
        if not self._has_tags(entry.registry, entry.repo):
            # The repository's last tag went: its tag list is kept for cached repositories only.
            with contextlib.suppress(OSError):
                self._layout.tag_list(entry.registry, entry.repo).unlink()
            self._catalog.change()
        return True

    async def get_list(self, upstream: str, repo: str) -> list[str] | None:
        """The last tag list stored for the repository, or None."""
        found = await asyncio.to_thread(self._read_list, upstream, repo)
        if found is None and self._shared is not None:
            found = await self._shared.get_list(upstream, repo)
        return found

    async def put_list(self, upstream: str, repo: str, tags: list[str]) -> None:
        """Store the repository's tag list, unless it is the one already stored. One too long
        to keep (`tag_list_document`) is not, and the list kept before goes, here and in the
        shared store: when the upstream cannot answer, the tags the cache holds are listed
        rather than a list known to be out of date."""
        changed = await asyncio.to_thread(self._write_list, upstream, repo, tags)
        if changed and self._shared is not None:
            with _unless_unavailable("tag lists"):
                await self._shared.put_list(upstream, repo, tags)

    async def recorded(self, upstream: str, repo: str) -> list[str]:
        """The tags of the repository this cache has a record of."""
        return await asyncio.to_thread(self._recorded, upstream, repo)

    def _read_list(self, upstream: str, repo: str) -> list[str] | None:
        try:
            data = self._layout.tag_list(upstream, repo).read_bytes()
        except OSError:
            return None
        return parse_tag_list(data)

    def _write_list(self, upstream: str, repo: str, tags: list[str]) -> bool:
        if self._read_list(upstream, repo) == tags:
            return False
        path = self._layout.tag_list(upstream, repo)
        data = tag_list_document(tags)
        if data is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return True  # the shared store may hold one too
        write_atomically(self._layout, path, data)
        return True

    def _has_tags(self, upstream: str, repo: str) -> bool:
        """Whether any tag is recorded: stops at the first, where `_recorded` reads them all
        (a collection removing a repository's tags one by one would list it each time)."""
        try:
            with os.scandir(self._layout.tags_of(upstream, repo)) as entries:
                return any(_is_tag(entry.name) for entry in entries)
        except OSError:
            return False

    def _recorded(self, upstream: str, repo: str) -> list[str]:
        try:
            names = [entry.name for entry in self._layout.tags_of(upstream, repo).iterdir()]
        except OSError:
            return []
        return sorted(name for name in names if _is_tag(name))


def _pulls_path(record: Path) -> Path:
    return record.parent.parent / _PULLS / record.name


def _names(path: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _is_tag(name: str) -> bool:
    try:
        validate_tag(name)
    except TagInvalid:
        return False
    return True


@contextlib.contextmanager
def _unless_unavailable(what: str) -> Iterator[None]:
    """Writing to the shared store failed: the local copy still serves this process."""
    try:
        yield
    except StorageUnavailable as e:
        log.warn_once(f"cannot store {what} in the object store", error=e.message)


def _read_record(path: Path) -> TagRecord | None:
    try:
        return parse_record(path.read_bytes())
    except OSError:
        return None


def parse_record(data: bytes) -> TagRecord | None:
    """A tag record from its JSON; a damaged one reads as absent (the tag is fetched again)."""
    try:
        raw = json.loads(data)
        Digest.parse(raw["digest"])
        return TagRecord(str(raw["digest"]), str(raw["media_type"]), float(raw["fetched_at"]))
    except (ValueError, KeyError, TypeError, DigestInvalid):
        return None


def tag_list_document(tags: list[str]) -> bytes | None:
    """A repository's tag list as it is stored (JSON, with when it was fetched), or None when
    longer than MAX_KEPT_LIST: not kept."""
    data = json.dumps({"tags": tags, "fetched_at": time.time()}).encode()
    return None if len(data) > MAX_KEPT_LIST else data


def parse_tag_list(data: bytes) -> list[str] | None:
    """A stored tag list from its JSON; absent or damaged: as if never stored."""
    try:
        return [validate_tag(tag) for tag in json.loads(data)["tags"]]
    except (ValueError, KeyError, TypeError, TagInvalid):
        return None


def _read_pulls(path: Path) -> Pulls:
    try:
        return _parse_pulls(path.read_bytes())
    except OSError:
        return Pulls()


def _parse_pulls(data: bytes) -> Pulls:
    try:
        raw = json.loads(data)
        last = raw.get("last")
        pulls = Pulls(int(raw["count"]), None if last is None else float(last))
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
        return Pulls()  # new, or damaged by a crash mid-write: counting starts over
    if pulls.last is not None and not 0 <= pulls.last <= _LATEST:
        return Pulls()  # damaged too (nan, infinity): no clock shows such a time
    return pulls
