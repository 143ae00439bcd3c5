"""Listings proxied as the upstream answers them (tag lists, referrers), with the last answer of
each kept in memory for when the upstream is down."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from cachetools import LRUCache

from mirror import log
from mirror.errors import UpstreamError
from mirror.oci.digest import Digest
from mirror.oci.mediatypes import OCI_INDEX
from mirror.upstream.registry import Listing, UpstreamRegistry

# OCI distribution-spec "Listing Referrers": no referrers is an empty index, and so is an
# upstream without the API (the spec's fallback tag schema is the client's business).
EMPTY_REFERRERS = Listing(
    f'{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}'.encode(), {}
)


class ListingService:
    def __init__(self, remembered: int = 1024) -> None:
        self._last: LRUCache[tuple[str, ...], Listing] = LRUCache(remembered)

    async def tags(
        self, upstream: UpstreamRegistry, repo: str, query: Mapping[str, str]
    ) -> Listing:
        """A page of the tag list; its `Link` header is a path on the upstream."""
        key = ("tags", upstream.name, repo, _canonical(query))
        found = await self._fetch(key, lambda: upstream.get_tags(repo, query))
        assert found is not None, "a tag list is never absent"
        return found

    async def referrers(
        self, upstream: UpstreamRegistry, repo: str, digest: Digest, query: Mapping[str, str]
    ) -> Listing:
        key = ("referrers", upstream.name, repo, str(digest), _canonical(query))
        found = await self._fetch(key, lambda: upstream.get_referrers(repo, digest, query))
        return found or EMPTY_REFERRERS

    async def _fetch(
        self, key: tuple[str, ...], fetch: Callable[[], Awaitable[Listing | None]]
    ) -> Listing | None:
        try:
            answer = await fetch()
        except UpstreamError:
            if key not in self._last:
                raise
            log.note_cache("stale")
            return self._last[key]
        log.note_cache("miss")
        if answer is not None:
            self._last[key] = answer
        return answer


def _canonical(query: Mapping[str, str]) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted(query.items()))
