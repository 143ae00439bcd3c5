"""Which content each mirrored repository holds, for mirrors whose access rules tell
repositories apart.

The cache keeps content by digest, whichever repository it came through, and would answer any
repository's request for it. With `[[access]]` rules that would let a client who may pull one
repository read another's by its digest (every pull prints its manifest's). So, there, content
is served through a repository only once that repository is known to hold it:

- it was answered through it (a manifest), or one of its tags leads to it (images imported or
  prefetched, caches from before this record);
- or its upstream says so, asked through it (a HEAD, which its own access rules answer).

What a manifest names is not held by that alone: a registry takes a manifest whose foreign or
non-distributable layers (and, where sparse indexes are allowed, child manifests) are not in the
repository, so anyone who may publish there could name another repository's layer and have it
answered through their own. What a held manifest names is only remembered, and stands in for
the upstream's word when the upstream cannot be asked (an outage, `--offline`).

What requests established is kept in one append-only file per repository beside its tags, so
every process on the cache directory, and a restart, knows it too. An upstream may confirm any
digest asked of it, so the file keeps only the newest MAX_HELD: a digest forgotten is asked
again, never served through a repository that may not hold it. What the tags lead to is read
from them, again only once they changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from cachetools import LRUCache

from mirror import log
from mirror.cache.links import links
from mirror.oci.digest import Digest
from mirror.storage.layout import CacheLayout, write_atomically
from mirror.storage.manifests import ManifestStore
from mirror.storage.tags import TagStore

# Repositories whose holdings are kept in memory (each digest as its raw bytes, about 90 bytes
# with the set's own); the others are read again when asked for.
REPOSITORIES = 64
# Digests a repository's file keeps (65 bytes a line, about 90 in memory): once it holds twice
# as many, it is rewritten with only the newest. Hundreds of images pulled through one
# repository fit; a digest forgotten costs its upstream's word again (a HEAD).
MAX_HELD = 4_096
# Digests a repository's held manifests name, remembered per repository (about 90 bytes each):
# one manifest may name tens of thousands. Past it, what was remembered is forgotten and
# remembering starts over: it stands in for the upstream only in an outage, where a digest
# forgotten is refused (503), never served through a repository that may not hold it.
MAX_NAMED = 16_384
# A repository's tags are walked for what they lead to again only once they changed, and then
# at most this often: requests for digests no tag leads to must not make the mirror read every
# manifest each time, nor clients pulling new tags between them.
WALK_EVERY = 60.0
# A tags directory changed this recently may change again within the same timestamp (ext3 and
# HFS+ keep whole seconds, FAT two): it counts as changed until it is older.
SETTLED_NS = 2_000_000_000
# An index inside an index is allowed; deeper is no image (as mirror/oci/contents.py reads it).
MAX_DEPTH = 3


@dataclass
class _Known:
    digests: set[bytes] = field(default_factory=set)  # as its file says
    tagged: set[bytes] = field(default_factory=set)  # what its tags led to (MAX_HELD of it)
    named: set[bytes] = field(default_factory=set)  # named by what it holds (in memory only)
    read_names: set[bytes] = field(default_factory=set)  # manifests whose names are in `named`
    file: tuple[int, bytes] = (0, b"")  # which file `digests` was read from (`_Seen.file`)
    read: int = 0  # the bytes of it read
    walked: float = float("-inf")  # when its tags were last walked
    tags: tuple[int, int] | None = None  # `_stamp` of its tags then; None: walk them again
    missing: set[Digest] = field(default_factory=set)  # manifests they led to, not cached


class RepoHoldings:
    """What each mirrored repository is known to hold."""

    def __init__(self, layout: CacheLayout, tags: TagStore, manifests: ManifestStore) -> None:
        self._layout = layout
        self._tags = tags
        self._manifests = manifests
        self._known: LRUCache[tuple[str, str], _Known] = LRUCache(maxsize=REPOSITORIES)

    async def holds(self, upstream: str, repo: str, digest: Digest) -> bool:
        """Whether the repository is known to hold `digest`, from its record or its tags."""
        known, wanted = self._of(upstream, repo), bytes.fromhex(digest.hex)
        if wanted in known.digests or wanted in known.tagged:
            return True
        await self._sync(self._path(upstream, repo), known)
        if wanted in known.digests:
            return True
        await self._walk(upstream, repo, known)
        return wanted in known.tagged

    async def names(self, upstream: str, repo: str, digest: Digest) -> bool:
        """Whether a manifest the repository holds names `digest`: what will do when its
        upstream cannot be asked, never in place of its answer."""
        known = self._of(upstream, repo)
        await self._walk(upstream, repo, known, missing=True)
        return bytes.fromhex(digest.hex) in known.named

    async def _walk(
        self, upstream: str, repo: str, known: _Known, *, missing: bool = False
    ) -> None:
        """Take what the repository's tags lead to as held, and remember what that names,
        unless neither its tags nor (with `missing`) the manifests they led to that the cache
        lacked changed since the last walk."""
        now = time.monotonic()
        if now - known.walked < WALK_EVERY:
            return
        started = time.time_ns()
        stamp = await asyncio.to_thread(self._stamp, upstream, repo)
        if stamp == known.tags and not (missing and await asyncio.to_thread(self._arrived, known)):
            return
        known.walked = now
        known.tags = stamp if stamp[1] < started - SETTLED_NS else None
        tagged, named, known.missing = await self._reachable(upstream, repo)
        known.tagged = {bytes.fromhex(d.hex) for d in itertools.islice(tagged, MAX_HELD)}
        _remember(known, named)

    def _stamp(self, upstream: str, repo: str) -> tuple[int, int]:
        """The repository's tags directory as it is now: a tag added, moved or removed is a
        rename or unlink in it, which sets its modification time (as every process sees)."""
        try:
            st = self._layout.tags_of(upstream, repo).stat()
        except OSError:
            return (0, 0)
        return st.st_ino, st.st_mtime_ns

    def _arrived(self, known: _Known) -> bool:
        """Whether a manifest the last walk could not read is in the cache now (an index's
        child fetched after its tag was recorded, as a prefetch does)."""
        return any(self._layout.manifest(digest).exists() for digest in known.missing)

    async def hold(self, upstream: str, repo: str, digests: Iterable[Digest]) -> None:
        """Record that the repository holds `digests`."""
        known = self._of(upstream, repo)
        new = {bytes.fromhex(d.hex) for d in digests} - known.digests
        if not new:
            return
        known.digests |= new
        path = self._path(upstream, repo)
        await asyncio.to_thread(self._append, path, new)
        await self._sync(path, known)

    async def hold_manifest(
        self, upstream: str, repo: str, digest: Digest, data: bytes | None
    ) -> None:
        """Record a manifest answered through the repository, and remember what it names
        (when its bytes are at hand: a HEAD may have been answered from an upstream HEAD)."""
        known, raw = self._of(upstream, repo), bytes.fromhex(digest.hex)
        if data and raw not in known.read_names:
            # Read once: a big manifest takes a good part of a second, and every request for
            # it would take that much of the event loop again.
            named = links(data)
            _remember(known, (*named.blobs, *named.manifests))
            known.read_names.add(raw)
        await self.hold(upstream, repo, (digest,))

    def _of(self, upstream: str, repo: str) -> _Known:
        key = (upstream, repo)
        known = self._known.get(key)
        if known is None:
            known = self._known[key] = _Known()
        return known

    def _path(self, upstream: str, repo: str) -> Path:
        # Beside the repository's `_tags` and `_list`, which no repository component can be
        # named like (mirror/storage/layout.py).
        return self._layout.tags_of(upstream, repo).with_name("_held")

    @staticmethod
    def _append(path: Path, digests: set[bytes]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(f"{d.hex()}\n" for d in sorted(digests)).encode("ascii")
        # One write with O_APPEND: records of several processes never interleave within a line.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    async def _sync(self, path: Path, known: _Known) -> None:
        """Read what other processes appended to the repository's file, and compact it once
        it holds twice MAX_HELD."""
        _take(known, await asyncio.to_thread(_read, path, known.file, known.read))
        if len(known.digests) > 2 * MAX_HELD:
            await asyncio.to_thread(self._compact, path)
            _take(known, await asyncio.to_thread(_read, path, known.file, known.read))

    def _compact(self, path: Path) -> None:
        """Put in the file's place one with only its newest MAX_HELD digests, under a header
        of its own. A line another process appends meanwhile may be lost with the old file:
        that digest is asked again."""
        try:
            data = path.read_bytes()
            whole = data[: data.rfind(b"\n") + 1]
            newest = list(dict.fromkeys(reversed(_parse(whole))))[:MAX_HELD]
            lines = [f"#{uuid.uuid4().hex}\n", *(f"{d.hex()}\n" for d in reversed(newest))]
            write_atomically(self._layout, path, "".join(lines).encode("ascii"))
        except OSError as e:
            log.warn_once("cannot compact what repositories hold", error=e.strerror)

    async def _reachable(
        self, upstream: str, repo: str
    ) -> tuple[set[Digest], set[Digest], set[Digest]]:
        """What the repository's recorded tags lead to; every manifest and blob those name in
        turn, in the cache; and the manifests among those that the cache lacks."""
        found: set[Digest] = set()
        missing: set[Digest] = set()
        pending: list[tuple[Digest, int]] = []
        for tag in await self._tags.recorded(upstream, repo):
            record = await self._tags.get(upstream, repo, tag)
            if record is not None:
                pending.append((record.parsed_digest, 0))
        tagged = {digest for digest, _ in pending}
        while pending:
            digest, depth = pending.pop()
            if digest in found:
                continue
            found.add(digest)
            if depth > MAX_DEPTH:
                continue
            stored = await self._manifests.get(digest)
            if stored is None:
                if len(missing) < MAX_HELD:
                    missing.add(digest)
                continue
            named = links(stored.data)
            found |= named.blobs
            pending.extend((m, depth + 1) for m in named.manifests)
        return tagged, found - tagged, missing


class _Seen(NamedTuple):
    """What one read of a repository's file found."""

    # Its inode and header: an inode may be taken again by the next file put in its place,
    # a header written by a compaction never.
    file: tuple[int, bytes]
    start: int  # the offset read from: 0 when it is not the file read before
    end: int  # the offset of the end of its last whole line
    digests: list[bytes]


def _read(path: Path, file: tuple[int, bytes], offset: int) -> _Seen | None:
    """The digests in whole lines of the file past `offset`, or from its start when it is no
    longer `file` (a compaction put another in its place)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            header = f.readline(64)
            seen = (st.st_ino, header if header.startswith(b"#") else b"")
            if seen != file or st.st_size < offset:
                offset = 0
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return None
    # Only whole lines: another process may be half-way through its append.
    whole = data[: data.rfind(b"\n") + 1]
    return _Seen(seen, offset, offset + len(whole), _parse(whole))


def _take(known: _Known, seen: _Seen | None) -> None:
    """Add what `_read` found; what a file read from its start says replaces what is known."""
    if seen is None:
        return
    if seen.start == 0:
        known.digests, known.read = set(seen.digests), seen.end
    else:
        known.digests.update(seen.digests)
        known.read = max(known.read, seen.end)
    known.file = seen.file


def _parse(whole: bytes) -> list[bytes]:
    """The digests of whole lines, in the order they were written."""
    found = []
    for line in whole.split():
        with contextlib.suppress(ValueError):  # not a digest: written by nobody sane
            found.append(bytes.fromhex(line.decode("ascii")))
    return found


def _remember(known: _Known, digests: Iterable[Digest]) -> None:
    """Remember what a held manifest names, within MAX_NAMED for the repository."""
    new = {bytes.fromhex(d.hex) for d in itertools.islice(digests, MAX_NAMED)}
    if len(known.named) + len(new) > MAX_NAMED or len(known.read_names) >= MAX_NAMED:
        known.named, known.read_names = set(), set()
    known.named |= new
