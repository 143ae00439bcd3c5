"""`/v2/_catalog`: every repository the endpoint holds, as clients address it.

Pushed repositories are named under their local namespace (`registry.example.internal/team/app`),
cached ones under their registry (`docker.io/library/alpine`): both are names the router takes
as a path prefix, so each entry can be pulled as listed. A mirrored repository is listed once a
tag of it was pulled (a pull by digest alone leaves no name behind).

Listing them is a walk of `tags/` and `local/`, which on a large cache takes a good part of a
second: each process keeps the sorted listing of its last walk, and walks again only once the
catalog's stamp changed (a tag cached or removed, a manifest pushed or deleted, by any process
on the cache directory), or after a minute, one walk at a time, shared by every request that
waits for it.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mirror.config.upstreams import UpstreamSettings
from mirror.flight import SingleFlight
from mirror.local.store import LocalStore
from mirror.pullthrough.listings import TagPage, paginate
from mirror.storage.catalog import CatalogStamp, cached_repositories
from mirror.storage.layout import CacheLayout

# A listing is walked again after this long even with the stamp unchanged: what changed without
# replacing it (files edited by hand, a release from before the stamp sharing the directory)
# shows within it, at the cost of a walk a minute.
MAX_AGE = 60.0


@dataclass(frozen=True, slots=True)
class _Listing:
    names: tuple[str, ...]  # sorted
    stamp: bytes  # the catalog's stamp, read before the walk
    taken: float  # when the walk began (by the clock)
    walk: int  # which of this process's walks took it


class Catalog:
    """The repositories of the endpoint, listed from one walk until the catalog changes."""

    def __init__(
        self,
        layout: CacheLayout,
        store: LocalStore,
        upstreams: Sequence[UpstreamSettings],
        local: Sequence[str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._layout = layout
        self._store = store
        self._upstreams = tuple(upstreams)
        self._local = tuple(local)
        self._stamp = CatalogStamp(layout)
        self._clock = clock
        self._listing: _Listing | None = None
        self._walks = 0  # begun in this process
        self._flight = SingleFlight[str, _Listing](note=False)

    async def page(
        self, may_pull: Callable[[str], bool], n: int | None, last: str | None
    ) -> TagPage:
        """The repositories `may_pull(<registry>/<repository>)` allows, sorted: those after
        `last`, at most `n` of them (distribution-spec "Listing Repositories", paged as tags
        are). Only the names up to the page's end are asked about."""
        names = await self._names()
        start = 0 if last is None else bisect.bisect_right(names, last)
        allowed = filter(may_pull, itertools.islice(names, start, None))
        # One name past the page tells whether another page follows.
        return paginate(list(itertools.islice(allowed, None if n is None else n + 1)), n, None)

    async def _names(self) -> tuple[str, ...]:
        """The sorted listing as of this call: the last walk's while it is current; else
        that of a walk begun after this call (one begun before may have missed a change made
        meanwhile)."""
        walks_before = self._walks
        stamp = self._stamp.read()
        listing = self._listing
        while listing is None or (
            listing.walk <= walks_before and not self._current(listing, stamp)
        ):
            listing = await self._flight.run("walk", self._walk)
        return listing.names

    def _current(self, listing: _Listing, stamp: bytes) -> bool:
        """Whether no change was made since the listing's walk read the stamp, as far as the
        stamp and the listing's age tell."""
        return listing.stamp == stamp and self._clock() - listing.taken < MAX_AGE

    async def _walk(self) -> _Listing:
        self._walks += 1
        walk = self._walks
        # The stamp before the walk: a change made during it replaces the stamp after the
        # walk read it, so the next request walks again.
        stamp, taken = self._stamp.read(), self._clock()
        names = await asyncio.to_thread(self._repositories)
        # One walk at a time (the single flight): the last to end is the last begun.
        self._listing = _Listing(names, stamp, taken, walk)
        return self._listing

    def _repositories(self) -> tuple[str, ...]:
        names = []
        for registry in self._local:
            names += [f"{registry}/{repo}" for repo in self._store.repositories(registry)]
        for upstream in self._upstreams:
            for repo in cached_repositories(self._layout, upstream.name):
                if upstream.allows(repo):
                    names.append(f"{upstream.name}/{repo}")
        return tuple(sorted(names))
