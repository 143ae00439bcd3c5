"""Adding a bundle's images to the cache, so the mirror serves them by tag and by digest with
no upstream at all.

Nothing appears half: the whole bundle is checked first (structure, names, manifests); then
every blob is copied through the spool, hashed and committed; then the manifests, children
before the indexes that list them; then the tags, last. A failure at any step leaves no tag and
no manifest that is not whole, only blobs that verified (unreferenced until imported again or
collected). Each blob copy holds the blob's claim, so a server filling the same blob from
its upstream meanwhile follows the copy instead of racing it.

A capped cache stays within its cap as it does for a download: before each blob is committed,
the least recently used content is evicted to make room for it (`Evictor.reserve`), and what the
bundle brings is never what goes. A bundle whose images alone take more than the whole cap is
refused before anything is copied.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mirror.cache.eviction import Freed
from mirror.errors import MirrorError
from mirror.images.bundle import DAMAGED, BadBundle, Bundle, BundlePlan
from mirror.images.targets import Target, resolve
from mirror.oci.digest import Digest
from mirror.oci.reference import ImageReference
from mirror.services import Services
from mirror.storage.claims import Claim
from mirror.storage.spool import fill_record, mark_verified, open_spool

COPY_CHUNK = 1 << 20
LOCK_POLL = 0.05


@dataclass(slots=True)
class Imported:
    names: list[ImageReference] = field(default_factory=list)
    unnamed: list[Digest] = field(default_factory=list)  # entries with no image name
    blobs_added: int = 0
    bytes_added: int = 0
    bytes_cached: int = 0
    evicted: Freed = field(default_factory=Freed)  # to keep the cache within its cap
    over_cap: int = 0  # bytes the cache is past its cap all the same (the rest is protected)


async def import_bundle(services: Services, path: Path) -> Imported:
    """Raises BadBundle, leaving no tag or manifest behind."""
    evictor = services.upkeep.evictor
    bundle = await asyncio.to_thread(Bundle, path)
    try:
        plan = await asyncio.to_thread(bundle.plan)
        targets = _targets(services, plan)
        missing = _check_room(services, plan)
        result = Imported()
        result.bytes_cached = sum(m.size for d, m in plan.blobs.items() if d not in missing)
        # Imported is as good as used, from the start: an image carried in again is not the
        # first to be evicted, however long ago its files were last read here, nor are the
        # blobs it finds cached taken while the rest is copied (what is copied is new). This
        # process's own passes keep all of it, whatever the protection window.
        evictor.spare([*plan.blobs, *plan.manifests])
        access = services.upkeep.access
        for blob in plan.blobs.keys() - missing.keys():
            access.stored_blob(blob)
        for manifest in plan.manifests:
            access.stored_manifest(manifest)
        await _add_blobs(services, bundle, missing, result)
    finally:
        bundle.close()
    for digest, (media_type, data) in plan.manifests.items():
        if await services.manifest_store.get(digest) is None:
            await services.manifest_store.put(digest, media_type, data)
    for image, target in zip(plan.images, targets, strict=True):
        if target is None:
            result.unnamed.append(image.digest)
            continue
        if target.name.tag is not None and target.name.digest is None:
            await services.tag_store.put(
                target.upstream.name, target.repo, target.name.tag, image.digest, image.media_type
            )
        result.names.append(target.name)
    # The manifests within the cap too, and the cache's true size should it stay past it: a
    # blob committed right after a walk counted it in the spool counts twice until the next.
    if not evictor.within_cap():
        await evictor.run_pass()
    result.evicted = evictor.evicted
    measured = evictor.measured()
    if measured is not None and measured[1] is not None:
        result.over_cap = max(0, measured[0] - measured[1])
    return result


def _targets(services: Services, plan: BundlePlan) -> list[Target | None]:
    """Where each named image is served from; a name this mirror cannot serve stops the import."""
    found: list[Target | None] = []
    for image in plan.images:
        try:
            found.append(resolve(services.router, image.name) if image.name else None)
        except MirrorError as e:
            raise BadBundle(f"{image.name}: {e.message}") from None
    return found


def _check_room(services: Services, plan: BundlePlan) -> dict[Digest, tarfile.TarInfo]:
    """The blobs the cache lacks, to copy. Refused before anything is copied: blobs the disk
    has no room for (as a download is refused, `Limits.room`: an import must not fill the disk
    that every download and write of the servers on it needs), and images that take more than
    the cache's whole cap (no eviction could make room for them; with a bucket behind the
    cache directory, the bucket keeps them whatever the directory's cap)."""
    missing = {
        digest: member
        for digest, member in plan.blobs.items()
        if services.blob_store.find(digest) is None
    }
    needed = sum(member.size for member in missing.values())
    room = services.upkeep.evictor.room()
    if needed > room.disk:
        raise BadBundle(
            f"its blobs take {needed} bytes, more than the cache's disk has room for, keeping "
            f"--min-free and a reserve free ({max(0, room.disk)} bytes)"
        )
    content = sum(member.size for member in plan.blobs.values()) + plan.manifest_bytes
    if services.upkeep.shared_blobs is None and room.cap is not None and content > room.cap:
        raise BadBundle(
            f"its images take {content} bytes, more than the cache may hold (--max-size, "
            f"{room.cap} bytes)"
        )
    return missing


async def _add_blobs(
    services: Services,
    bundle: Bundle,
    missing: dict[Digest, tarfile.TarInfo],
    result: Imported,
) -> None:
    # In archive order: one pass over the file, however the members were written.
    for digest, member in sorted(missing.items(), key=lambda item: item[1].offset):
        lock = await _blob_lock(services, digest)
        if lock is None:
            result.bytes_cached += member.size  # a server put it in the cache meanwhile
            continue
        try:
            await _import_blob(services, bundle, member, digest, lock)
        finally:
            lock.release()
        result.blobs_added += 1
        result.bytes_added += member.size


async def _blob_lock(services: Services, digest: Digest) -> Claim | None:
    """The blob's claim, or None once the blob is in the cache (a fill by a server that
    held the lock may have put it there meanwhile)."""
    while True:
        lock = Claim.try_take(services.layout.spool, digest.hex)
        if lock is not None:
            if services.blob_store.find(digest) is None:
                return lock
            lock.release()
            return None
        await asyncio.sleep(LOCK_POLL)
        if services.blob_store.find(digest) is not None:
            return None


async def _import_blob(
    services: Services, bundle: Bundle, member: tarfile.TarInfo, digest: Digest, lock: Claim
) -> None:
    """Copy one blob through the spool (in a thread), then commit it here on the event loop,
    as a fill does: what hears of a new blob starts its work on the loop (the upload to a bucket
    behind the cache directory), and finds the spool closed by then."""
    part = services.blob_store.new_spool_file(digest)
    try:
        with open_spool(part) as out:
            lock.publish(fill_record(part, member.size))
            await asyncio.to_thread(_copy_blob, bundle, member, digest, out)
            # Room within the cap first, as for a download (the spool file counts in the walk).
            await services.upkeep.evictor.reserve(member.size)
            # Renamed while still open and locked, so no start-up sweep can take it.
            services.blob_store.commit(part, digest)
    finally:
        part.unlink(missing_ok=True)


def _copy_blob(bundle: Bundle, member: tarfile.TarInfo, digest: Digest, out: BinaryIO) -> None:
    """Write the member to `out` and make it durable, or raise BadBundle if it is not whole."""
    with bundle.open(member) as source:
        hasher = hashlib.new(digest.algorithm)
        copied = 0
        while True:
            try:
                chunk = source.read(COPY_CHUNK)
            except DAMAGED as e:  # the archive's, not a failed write to the spool
                raise BadBundle(
                    f"{member.name} cannot be read ({e}): the archive is truncated or damaged"
                ) from None
            if not chunk:
                break
            hasher.update(chunk)
            out.write(chunk)
            copied += len(chunk)
    if copied != member.size:
        raise BadBundle(f"{member.name} is cut short: the archive is truncated")
    if hasher.hexdigest() != digest.hex:
        raise BadBundle(f"{member.name}: the bytes do not match the digest")
    out.flush()
    mark_verified(out.fileno())
    os.fsync(out.fileno())
