"""Tag records: the last known tag → digest mapping, and each repository's last tag list from
its upstream, kept on disk so both survive restarts."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass

from mirror.errors import DigestInvalid, TagInvalid
from mirror.oci.digest import Digest
from mirror.oci.names import validate_tag
from mirror.storage.layout import CacheLayout, write_atomically


@dataclass(frozen=True, slots=True)
class TagRecord:
    digest: str
    media_type: str
    fetched_at: float

    @property
    def parsed_digest(self) -> Digest:
        return Digest.parse(self.digest)


class TagStore:
    """Tag records and tag lists under `tags/<registry>/<repository>/`."""

    def __init__(self, layout: CacheLayout) -> None:
        self._layout = layout

    async def get(self, upstream: str, repo: str, tag: str) -> TagRecord | None:
        return await asyncio.to_thread(self._read, upstream, repo, tag)

    async def put(
        self, upstream: str, repo: str, tag: str, digest: Digest, media_type: str
    ) -> None:
        record = TagRecord(str(digest), media_type, time.time())
        data = json.dumps(asdict(record)).encode()
        path = self._layout.tag(upstream, repo, tag)
        await asyncio.to_thread(write_atomically, self._layout, path, data)

    def _read(self, upstream: str, repo: str, tag: str) -> TagRecord | None:
        try:
            raw = json.loads(self._layout.tag(upstream, repo, tag).read_bytes())
            Digest.parse(raw["digest"])
            return TagRecord(str(raw["digest"]), str(raw["media_type"]), float(raw["fetched_at"]))
        except (OSError, ValueError, KeyError, TypeError, DigestInvalid):
            # A damaged record reads as absent: the tag is then simply fetched again.
            return None

    async def get_list(self, upstream: str, repo: str) -> list[str] | None:
        """The last tag list stored for the repository, or None."""
        return await asyncio.to_thread(self._read_list, upstream, repo)

    async def put_list(self, upstream: str, repo: str, tags: list[str]) -> None:
        """Store the repository's tag list, unless it is the one already stored."""
        await asyncio.to_thread(self._write_list, upstream, repo, tags)

    async def recorded(self, upstream: str, repo: str) -> list[str]:
        """The tags of the repository this cache has a record of."""
        return await asyncio.to_thread(self._recorded, upstream, repo)

    def _read_list(self, upstream: str, repo: str) -> list[str] | None:
        try:
            raw = json.loads(self._layout.tag_list(upstream, repo).read_bytes())
            return [validate_tag(tag) for tag in raw["tags"]]
        except (OSError, ValueError, KeyError, TypeError, TagInvalid):
            return None  # absent or damaged: as if never stored

    def _write_list(self, upstream: str, repo: str, tags: list[str]) -> None:
        if self._read_list(upstream, repo) == tags:
            return
        data = json.dumps({"tags": tags, "fetched_at": time.time()}).encode()
        write_atomically(self._layout, self._layout.tag_list(upstream, repo), data)

    def _recorded(self, upstream: str, repo: str) -> list[str]:
        try:
            names = [entry.name for entry in self._layout.tags_of(upstream, repo).iterdir()]
        except OSError:
            return []
        return sorted(name for name in names if _is_tag(name))


def _is_tag(name: str) -> bool:
    try:
        validate_tag(name)
    except TagInvalid:
        return False
    return True
