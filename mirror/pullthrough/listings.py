"""Listings: tag lists, paged by the mirror as the OCI distribution spec says whatever the
upstream does, and referrers, proxied; the last answer of each is kept for when the upstream
cannot answer (tag lists on disk, so they survive restarts, for the repositories the cache holds
tags of; referrers in memory)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from cachetools import LRUCache

from mirror import log
from mirror.errors import OfflineMiss, PaginationNumberInvalid, UpstreamError
from mirror.oci.digest import Digest
from mirror.oci.mediatypes import OCI_INDEX
from mirror.storage.tags import TagStore
from mirror.upstream.registry import Listing, UpstreamRegistry

# OCI distribution-spec "Listing Referrers": no referrers is an empty index, and so is an
# upstream without the API (the spec's fallback tag schema is the client's business).
EMPTY_REFERRERS = Listing(
    f'{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}'.encode(), {}
)
# Referrers answers kept in memory, in bytes of body.
REFERRERS_MEMORY = 8 << 20
_PAGE_SIZE = re.compile(r"[0-9]{1,9}", re.ASCII)


def page_size(value: str | None) -> int | None:
    """The `n` of a tag list request: None when absent, else a non-negative integer."""
    if value is None:
        return None
    if not _PAGE_SIZE.fullmatch(value):
        raise PaginationNumberInvalid(
            f"n must be a non-negative integer of at most 9 digits, not {value[:50]!r}"
        )
    return int(value)


@dataclass(frozen=True, slots=True)
class TagPage:
    tags: list[str]
    more: bool  # a next page exists: the answer carries a `Link` to it


def paginate(tags: list[str], n: int | None, last: str | None) -> TagPage:
    """distribution-spec "Listing Tags": in lexical order, only the tags after `last`, at most
    `n` of them."""
    after = [tag for tag in tags if last is None or tag > last]
    if n is None:
        return TagPage(after, False)
    return TagPage(after[:n], 0 < n < len(after))


def _size(listing: Listing) -> int:
    return len(listing.body) + 256


class ListingService:
    """Tag lists and referrers of the upstreams, with a fallback for each."""

    def __init__(self, tags: TagStore, referrers_memory: int = REFERRERS_MEMORY) -> None:
        self._tags = tags
        self._referrers: LRUCache[tuple[str, ...], Listing] = LRUCache(
            maxsize=referrers_memory, getsizeof=_size
        )

    @property
    def memory(self) -> int:
        """Bytes of referrers answers held in memory."""
        return int(self._referrers.currsize)

    async def tags(self, upstream: UpstreamRegistry, repo: str) -> list[str]:
        """Every tag of the repository, sorted. When the upstream cannot answer: the last list
        it sent, with the tags pulled since; with no list stored, the tags pulled."""
        try:
            tags = await upstream.get_tags(repo)
        except UpstreamError:
            stored = await self._tags.get_list(upstream.name, repo)
            recorded = await self._tags.recorded(upstream.name, repo)
            if stored is None and not recorded:
                raise
            log.note_cache("stale")
            return sorted(set(stored or ()) | set(recorded))
        log.note_cache("miss")
        try:
            # Kept only for a repository the cache holds tags of: any client may list any
            # name, and no size cap counts these files (each is bounded: MAX_KEPT_LIST).
            if await self._tags.recorded(upstream.name, repo):
                await self._tags.put_list(upstream.name, repo, tags)
        except OSError as e:  # a full disk costs the fallback, not this answer
            log.get_logger().warning(
                "cannot store tag list", upstream=upstream.name, repo=repo, error=str(e)
            )
        return tags

    async def referrers(
        self, upstream: UpstreamRegistry, repo: str, digest: Digest, query: Mapping[str, str]
    ) -> Listing:
        key = ("referrers", upstream.name, repo, str(digest), _canonical(query))
        try:
            answer = await upstream.get_referrers(repo, digest, query)
        except OfflineMiss:
            # The cache keeps no referrers index: offline, there are none to tell of.
            log.note_cache("hit")
            return self._referrers.get(key, EMPTY_REFERRERS)
        except UpstreamError:
            if (last := self._referrers.get(key)) is None:
                raise
            log.note_cache("stale")
            return last
        log.note_cache("miss")
        if answer is None:
            return EMPTY_REFERRERS
        if _size(answer) <= self._referrers.maxsize:
            self._referrers[key] = answer
        return answer


def _canonical(query: Mapping[str, str]) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted(query.items()))
