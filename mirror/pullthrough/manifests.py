"""Manifest policy: digests are immutable and cached forever; tags are fresh for a TTL, then
revalidated with a cheap upstream HEAD, and served stale when the upstream cannot answer."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from mirror import log
from mirror.cache.recency import AccessLog
from mirror.errors import MirrorError, UpstreamError
from mirror.flight import SingleFlight
from mirror.meta.store import MetadataStore
from mirror.oci.contents import media_type_of
from mirror.oci.digest import Digest
from mirror.replicas.manifests import ReplicaManifests
from mirror.storage.backend import ManifestBackend, TagBackend
from mirror.storage.claims import once
from mirror.storage.manifests import StoredManifest
from mirror.upstream.registry import FetchedManifest, UpstreamRegistry

# How long one process may hold a tag's revalidation before another may try.
REVALIDATION_LEASE = 10.0
# How long a process waits for another one's fetch of the same manifest before fetching itself.
OTHER_FETCH_WAIT = 30.0


@dataclass(frozen=True, slots=True)
class ManifestAnswer:
    """What to send: the stored manifest, or (for a HEAD of an uncached digest) its headers."""

    digest: Digest
    media_type: str
    size: int
    data: bytes | None


def _answer(manifest: StoredManifest) -> ManifestAnswer:
    return ManifestAnswer(manifest.digest, manifest.media_type, len(manifest.data), manifest.data)


def _fetched_elsewhere(manifest: StoredManifest | None) -> ManifestAnswer | None:
    """What another process fetched while this one waited for it: for this request, one
    upstream fetch shared, as in-process waiters share one (`SingleFlight`)."""
    if manifest is None:
        return None
    log.note_cache("coalesced")
    return _answer(manifest)


class ManifestService:
    """Manifests by digest and by tag, from the cache or the upstream; `replicas`, in replica
    mode: other replicas, asked before the upstream (mirror/replicas/manifests.py)."""

    def __init__(
        self,
        manifests: ManifestBackend,
        tags: TagBackend,
        meta: MetadataStore,
        access: AccessLog,
        spool: Path,
        replicas: ReplicaManifests | None = None,
    ) -> None:
        self._replicas = replicas
        self._spool = spool
        self._manifests = manifests
        self._tags = tags
        self._meta = meta
        self._access = access
        # Keyed by route (registry and repository) as well as reference: a request through a
        # repository the upstream refuses must not hand its refusal to one through another.
        self._flights: SingleFlight[str, ManifestAnswer] = SingleFlight()

    async def by_digest(
        self, upstream: UpstreamRegistry, repo: str, digest: Digest, *, head: bool
    ) -> ManifestAnswer:
        stored = await self._manifests.get(digest)
        if stored is not None:
            log.note_cache("hit")
            self._access.manifest(digest)
            return _answer(stored)
        log.note_cache("miss")
        if head:
            # A probe is answered from an upstream HEAD: Docker Hub counts manifest GETs
            # against the pull limit, HEADs it does not.
            info = await upstream.head_manifest(repo, str(digest))
            if info.size is not None and info.digest in (None, digest):
                return ManifestAnswer(digest, info.media_type, info.size, None)
        key = f"{upstream.name}/{repo}@{digest}"
        return await self._flights.run(key, lambda: self._fetch(upstream, repo, digest, key))

    async def _fetch(
        self, upstream: UpstreamRegistry, repo: str, digest: Digest, key: str
    ) -> ManifestAnswer:
        async def fetch() -> ManifestAnswer:
            fetched = None if self._replicas is None else await self._replicas.fetch(digest)
            if fetched is None:
                try:
                    fetched = await upstream.get_manifest(repo, str(digest))
                except MirrorError:
                    # The lease is the digest's, whichever repository took it.
                    if self._replicas is not None:
                        await self._replicas.not_fetched(digest)
                    raise
            return _answer(await self._store(fetched))

        async def stored() -> ManifestAnswer | None:
            found = await self._manifests.get(digest)
            return _fetched_elsewhere(found)

        return await once(self._spool, f"manifest {key}", fetch, stored, OTHER_FETCH_WAIT)

    async def by_tag(self, upstream: UpstreamRegistry, repo: str, tag: str) -> ManifestAnswer:
        key = f"{upstream.name}/{repo}:{tag}"
        fresh = await self._meta.fresh_digest(key)
        if fresh is not None:
            # Fresh, here or in another process sharing the store: the digest is known, and
            # content by digest never needs revalidating.
            answer = await self.by_digest(upstream, repo, Digest.parse(fresh), head=False)
            if answer.data is not None:
                return answer
        answer = await self._flights.run(key, lambda: self._refresh(upstream, repo, tag, key))
        # Every answer is a use, stale ones included: an offline site lives on them.
        self._access.manifest(answer.digest)
        return answer

    async def _refresh(
        self, upstream: UpstreamRegistry, repo: str, tag: str, key: str
    ) -> ManifestAnswer:
        record = await self._tags.get(upstream.name, repo, tag)
        stored = await self._manifests.get(record.parsed_digest) if record else None
        if stored is not None and (upstream.settings.offline or await upstream.health.is_sparing()):
            # Offline, or near the upstream's pull limit (or after a 429): what we have will do.
            log.note_cache("stale")
            return _answer(stored)
        if stored is not None and not await self._meta.try_lease(key, REVALIDATION_LEASE):
            # Another process is revalidating this tag right now; until it is done, the last
            # known answer is as good as any.
            log.note_cache("hit")
            return _answer(stored)
        leased = stored is not None
        if stored is None and self._replicas is not None:
            leased = await self._meta.try_lease(key, REVALIDATION_LEASE)
            # Another replica resolves the tag now, or did since this one looked.
            fresh = (
                await self._meta.fresh_digest(key) if leased else await self._replicas.resolved(key)
            )
            if fresh is not None:
                try:
                    return await self._resolved_elsewhere(upstream, repo, tag, Digest.parse(fresh))
                finally:
                    if leased:
                        await self._meta.release_lease(key)
        try:
            if stored is None:
                # A first pull: other workers missing it too wait for this one's answer.
                answer = await once(
                    self._spool,
                    f"tag {key}",
                    partial(self._revalidate, upstream, repo, tag, None),
                    partial(self._recorded, upstream, repo, tag),
                    OTHER_FETCH_WAIT,
                )
            elif await self._meta.fresh_digest(key) == str(stored.digest):
                # Revalidated elsewhere between our freshness check and taking the lease.
                log.note_cache("hit")
                return _answer(stored)
            else:
                answer = await self._revalidate(upstream, repo, tag, stored)
            # Fresh before the lease goes: a process that takes it next must find the tag
            # revalidated, not ask the upstream again.
            await self._meta.mark_fresh(key, str(answer.digest), upstream.settings.ttl_for(tag))
        except UpstreamError:
            if stored is None:
                raise
            # stale-if-error: the upstream is down, throttling or failing; the last known
            # answer is better than none, and this is what offline sites rely on.
            log.note_cache("stale")
            log.get_logger().warning(
                "serving stale tag",
                upstream=upstream.name,
                repo=repo,
                tag=tag,
                digest=str(stored.digest),
            )
            return _answer(stored)
        finally:
            if leased:
                await self._meta.release_lease(key)
        return answer

    async def _resolved_elsewhere(
        self, upstream: UpstreamRegistry, repo: str, tag: str, digest: Digest
    ) -> ManifestAnswer:
        """A first pull of a tag another replica resolved: its answer, read by digest (from
        that replica, unless this one has it), and the tag recorded here too."""
        answer = await self.by_digest(upstream, repo, digest, head=False)
        await self._remember(upstream, repo, tag, answer.digest, answer.media_type)
        return answer

    async def _revalidate(
        self, upstream: UpstreamRegistry, repo: str, tag: str, stored: StoredManifest | None
    ) -> ManifestAnswer:
        if stored is not None:
            head = await upstream.head_manifest(repo, tag)
            if head.digest == stored.digest:
                log.note_cache("hit")
                return _answer(stored)
            if head.digest is not None and (known := await self._manifests.get(head.digest)):
                log.note_cache("hit")
                await self._remember(upstream, repo, tag, known.digest, known.media_type)
                return _answer(known)
        log.note_cache("miss")
        manifest = await self._store(await upstream.get_manifest(repo, tag))
        await self._remember(upstream, repo, tag, manifest.digest, manifest.media_type)
        return _answer(manifest)

    async def _store(self, fetched: FetchedManifest) -> StoredManifest:
        """Keep a fetched manifest; one that cannot be written (a full disk, no descriptors)
        is still served: the client has what it asked for, the next request fetches again."""
        # The manifest's own mediaType names what it is, whatever the upstream's Content-Type.
        media_type = media_type_of(fetched.data, fetched.media_type)
        try:
            stored = await self._manifests.put(fetched.digest, media_type, fetched.data)
        except OSError as e:
            log.warn_once("cannot store manifests", error=e.strerror)
            return StoredManifest(fetched.digest, media_type, fetched.data)
        if self._replicas is not None:
            await self._replicas.held(fetched.digest)
        return stored

    async def local(self, digest: Digest) -> StoredManifest | None:
        """The manifest if this replica holds it (for the others: never from an upstream)."""
        return await self._manifests.get(digest)

    async def _recorded(
        self, upstream: UpstreamRegistry, repo: str, tag: str
    ) -> ManifestAnswer | None:
        record = await self._tags.get(upstream.name, repo, tag)
        return _fetched_elsewhere(
            await self._manifests.get(record.parsed_digest) if record else None
        )

    async def _remember(
        self, upstream: UpstreamRegistry, repo: str, tag: str, digest: Digest, media_type: str
    ) -> None:
        try:
            await self._tags.put(upstream.name, repo, tag, digest, media_type)
        except OSError as e:
            log.warn_once("cannot store tags", error=e.strerror)
