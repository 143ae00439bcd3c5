"""Manifests and tags of local namespaces: pushed, served, listed, deleted.

A pushed manifest is stored byte for byte in the cache's content-addressed `manifests/`, linked
into its repository (`LocalStore`), and tagged when pushed by tag. It must name only content
the repository holds: every blob linked into it (uploaded or mounted) and every child manifest
pushed to it; its `subject` may be anything, pushed before or after it (distribution-spec
"Push").
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from mirror.errors import (
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
)
from mirror.local.inspect import inspect
from mirror.local.store import LocalStore, Revision
from mirror.oci.contents import Descriptor
from mirror.oci.digest import Digest, looks_like_digest
from mirror.oci.mediatypes import OCI_INDEX
from mirror.oci.names import validate_tag
from mirror.pullthrough.manifests import ManifestAnswer
from mirror.pullthrough.routing import LocalRoute
from mirror.storage.blobs import BlobStore
from mirror.storage.manifests import ManifestStore
from mirror.storage.tags import TagStore


@dataclass(frozen=True, slots=True)
class Pushed:
    digest: Digest
    subject: Digest | None


@dataclass(frozen=True, slots=True)
class Referrers:
    body: bytes
    filtered: bool  # an artifactType filter was applied (OCI-Filters-Applied)


class LocalManifests:
    def __init__(
        self, store: LocalStore, manifests: ManifestStore, tags: TagStore, blobs: BlobStore
    ) -> None:
        self._store = store
        self._manifests = manifests
        self._tags = tags
        self._blobs = blobs

    async def get(self, route: LocalRoute, reference: str) -> ManifestAnswer:
        digest = await self._resolve(route, reference)
        if digest is not None:
            stored = await self._manifests.get(digest)
            if stored is not None:
                return ManifestAnswer(digest, stored.media_type, len(stored.data), stored.data)
        raise ManifestUnknown(f"{route.registry}/{route.repo} has no manifest {reference[:200]}")

    async def _resolve(self, route: LocalRoute, reference: str) -> Digest | None:
        """The digest of a tag or digest the repository holds."""
        if looks_like_digest(reference):
            digest = Digest.parse(reference)
        else:
            record = await self._tags.get(route.registry, route.repo, validate_tag(reference))
            if record is None:
                return None
            digest = record.parsed_digest
        revision = await asyncio.to_thread(self._store.revision, route.registry, route.repo, digest)
        return None if revision is None else digest

    async def put(
        self, route: LocalRoute, reference: str, data: bytes, content_type: str | None
    ) -> Pushed:
        if by_digest := looks_like_digest(reference):
            wanted = Digest.parse(reference)
            digest = Digest.of(data, wanted.algorithm)
            if digest != wanted:
                raise DigestInvalid(f"the manifest's digest is {digest}, not {wanted}")
        else:
            tag = validate_tag(reference)
            digest = Digest.of(data)
        pushed = inspect(data, digest, content_type)
        await self._check_references(route, pushed.contents.blobs, pushed.contents.manifests)
        contents = pushed.contents
        revision = Revision(
            pushed.media_type,
            len(data),
            pushed.subject,
            tuple(d.digest for d in contents.manifests),
            tuple(d.digest for d in contents.blobs),
        )
        await self._manifests.put(digest, pushed.media_type, data)
        await asyncio.to_thread(
            self._store.add_revision, route.registry, route.repo, digest, revision, pushed.referrer
        )
        if not by_digest:
            await self._tags.put(route.registry, route.repo, tag, digest, pushed.media_type)
        return Pushed(digest, pushed.subject)

    async def _check_references(
        self,
        route: LocalRoute,
        blobs: tuple[Descriptor, ...],
        manifests: tuple[Descriptor, ...],
    ) -> None:
        missing = []
        for descriptor in blobs:
            found = self._blobs.find(descriptor.digest)
            if found is None or not self._store.has_blob(
                route.registry, route.repo, descriptor.digest
            ):
                missing.append(descriptor.digest)
            elif found[1] != descriptor.size:
                raise ManifestInvalid(
                    f"blob {descriptor.digest} is {found[1]} bytes, its descriptor says "
                    f"{descriptor.size}"
                )
        for descriptor in manifests:
            if await self._resolve(route, str(descriptor.digest)) is None:
                missing.append(descriptor.digest)
        if missing:
            # distribution-spec "Push": MANIFEST_BLOB_UNKNOWN, the detail naming the digest.
            raise ManifestBlobUnknown(
                f"{len(missing)} of the blobs and manifests it names are not in "
                f"{route.registry}/{route.repo}, the first being {missing[0]}",
                detail={"digest": str(missing[0])},
            )

    async def delete(self, route: LocalRoute, reference: str) -> None:
        """A tag: untag it. A digest: forget the manifest and every tag of it in the
        repository (distribution-spec "Deleting Manifests")."""
        registry, repo = route.registry, route.repo
        if not looks_like_digest(reference):
            if not await asyncio.to_thread(
                self._store.untag, registry, repo, validate_tag(reference)
            ):
                raise ManifestUnknown(f"{registry}/{repo} has no tag {reference}")
            return
        digest = Digest.parse(reference)
        if await asyncio.to_thread(self._store.remove_revision, registry, repo, digest) is None:
            raise ManifestUnknown(f"{registry}/{repo} has no manifest {digest}")
        for tag in await self._tags.recorded(registry, repo):
            record = await self._tags.get(registry, repo, tag)
            if record is not None and record.parsed_digest == digest:
                await asyncio.to_thread(self._store.untag, registry, repo, tag)

    async def tags(self, route: LocalRoute) -> list[str]:
        tags = await self._tags.recorded(route.registry, route.repo)
        if not tags and not await asyncio.to_thread(
            self._store.has_repository, route.registry, route.repo
        ):
            raise NameUnknown(f"{route.registry}/{route.repo} does not exist")
        return tags

    async def referrers(
        self, route: LocalRoute, subject: Digest, artifact_type: str | None
    ) -> Referrers:
        """distribution-spec "Listing Referrers": an index of the repository's manifests whose
        subject is `subject`, empty when there are none (never a 404)."""
        found = await asyncio.to_thread(self._store.referrers, route.registry, route.repo, subject)
        if artifact_type is not None:
            found = [d for d in found if d.get("artifactType") == artifact_type]
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": found}
        return Referrers(json.dumps(index).encode(), artifact_type is not None)
