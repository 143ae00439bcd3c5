"""Reading an OCI image layout archive (image-spec image-layout.md) and checking, before any of
it is added to the cache, that it is whole: `oci-layout` and `index.json` readable, every image
named by a valid reference, every manifest present and hashing to its digest, every blob it
names present with the size its descriptor gives. Blob bytes are hashed later, as they are
copied."""

from __future__ import annotations

import io
import lzma
import os
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mirror import jsondoc
from mirror.images.archive import CONTAINERD_NAME, REF_NAME, blob_path
from mirror.oci.contents import (
    MAX_INDEX_DEPTH,
    Descriptor,
    InvalidManifest,
    read_contents,
    served_type,
)
from mirror.oci.digest import Digest
from mirror.oci.mediatypes import is_media_type
from mirror.oci.reference import ImageReference, InvalidReference, parse_reference
from mirror.upstream.pool import MAX_MANIFEST_SIZE

MAX_INDEX_SIZE = 16 << 20
# An export writes one member per manifest and blob, and a handful more: a bundle of a
# thousand images has some twenty thousand. Every header read stays in memory (some 500 bytes
# each, with the names and pax records besides), so these bound what an archive can make the
# import hold, whatever its size compressed.
MAX_MEMBERS = 50_000
MAX_HEADER_BYTES = 16 << 20
# The manifests are held in memory until they are stored, and each may take 4 MiB (padded
# with white space, a few bytes of gzip): a bound on them all bounds what the plan holds. An
# image's manifest takes a few kilobytes, an index's a few dozen.
MAX_MANIFEST_BYTES = 256 << 20
# What reading a damaged or cut-off archive raises: tarfile's own errors, and those of the
# decompressors under it, which tarfile lets through (gzip's EOFError and zlib.error, xz's
# LZMAError; bz2 and a bad gzip header raise OSError).
DAMAGED = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)


class BadBundle(Exception):
    """The archive cannot be imported; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class BundleImage:
    name: ImageReference | None  # None: the entry names no image; its content comes by digest
    digest: Digest
    media_type: str


@dataclass(slots=True)
class BundlePlan:
    """What importing the bundle adds: manifests children first, so each is stored only after
    everything it refers to."""

    images: list[BundleImage] = field(default_factory=list)
    manifests: dict[Digest, tuple[str, bytes]] = field(default_factory=dict)  # type, bytes
    blobs: dict[Digest, tarfile.TarInfo] = field(default_factory=dict)
    manifest_bytes: int = 0  # of all the manifests


class Bundle:
    """An opened archive; `plan()` checks its structure and lists what it holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._tar = tarfile.open(path, "r:*")  # noqa: SIM115 -- closed by close()
        except tarfile.TarError:
            raise BadBundle("not a tar archive") from None
        except OSError as e:
            raise BadBundle(f"cannot be read: {e.strerror}") from None
        except DAMAGED as e:  # cut or damaged within the first header
            raise BadBundle(f"the archive is truncated or damaged ({e})") from None
        try:
            self._members = self._read_members()
        except DAMAGED as e:
            self._tar.close()
            raise BadBundle(f"the archive is truncated or damaged ({e})") from None
        except BadBundle:
            self._tar.close()
            raise

    def _read_members(self) -> dict[str, tarfile.TarInfo]:
        """The regular members by name, read one header at a time and refused past the bounds
        (tarfile keeps every header it reads, so a bound on what it reads bounds memory)."""
        members: dict[str, tarfile.TarInfo] = {}
        header_bytes = end = 0
        for count, member in enumerate(self._tar, 1):
            header_bytes += _header_size(member)
            if count > MAX_MEMBERS:
                raise BadBundle(f"more than {MAX_MEMBERS} members, more than image bundles have")
            if header_bytes > MAX_HEADER_BYTES:
                raise BadBundle(f"member names and headers of more than {MAX_HEADER_BYTES} bytes")
            end = max(end, member.offset_data + member.size)
            if member.isreg():
                members[os.path.normpath(member.name).lstrip("/")] = member
        self._check_complete(end)
        return members

    def close(self) -> None:
        self._tar.close()

    def _check_complete(self, end: int) -> None:
        """A tar cut short may still list its first members; an uncompressed one must at least
        hold every member's data (up to `end`) and the end-of-archive blocks."""
        if not isinstance(self._tar.fileobj, io.BufferedReader):
            return  # compressed: a cut-off stream fails as it is read
        size = self.path.stat().st_size
        if end > size or self._tar.offset + 2 * tarfile.BLOCKSIZE > size:
            raise BadBundle("the archive is truncated")

    def member(self, digest: Digest) -> tarfile.TarInfo | None:
        return self._members.get(blob_path(digest))

    def open(self, member: tarfile.TarInfo) -> IO[bytes]:
        found = self._tar.extractfile(member)
        assert found is not None, "regular members only"
        return found

    def _read(self, name: str, limit: int) -> bytes | None:
        member = self._members.get(name)
        if member is None:
            return None
        if member.size > limit:
            raise BadBundle(f"{name} is larger than {limit} bytes")
        try:
            with self.open(member) as f:
                return f.read()
        except DAMAGED as e:
            raise BadBundle(f"{name} cannot be read ({e}): the archive is truncated") from None

    def plan(self) -> BundlePlan:
        layout = self._read("oci-layout", 4096)
        if layout is None:
            raise BadBundle("not an OCI image layout: it has no oci-layout file")
        if not str(_json(layout, "oci-layout").get("imageLayoutVersion", "")).startswith("1."):
            raise BadBundle("oci-layout: not an image layout version 1.x")
        index = self._read("index.json", MAX_INDEX_SIZE)
        if index is None:
            raise BadBundle("not an OCI image layout: it has no index.json")
        try:
            contents = read_contents(index)
        except InvalidManifest as e:
            raise BadBundle(f"index.json: {e}") from None
        if not contents.manifests:
            raise BadBundle("index.json names no image")
        plan = BundlePlan()
        names: set[str] = set()
        raw_entries = _json(index, "index.json")["manifests"]
        for n, entry in enumerate(contents.manifests):
            where = f"index.json manifests[{n}]"
            if not is_media_type(entry.media_type):
                # image-spec descriptor.md: it MUST comply with RFC 6838.
                raise BadBundle(f"{where}: {entry.media_type[:64]!r} is not a media type")
            name = _name(raw_entries[n], where)
            if name is not None and str(name) in names:
                raise BadBundle(f"{where}: {name} is named twice")
            if name is not None and name.digest not in (None, entry.digest):
                raise BadBundle(f"{where}: {name} names another digest than {entry.digest}")
            media_type = self._plan_manifest(plan, entry, where, depth=0)
            plan.images.append(BundleImage(name, entry.digest, media_type))
            names.add(str(name))
        return plan

    def _plan_manifest(self, plan: BundlePlan, entry: Descriptor, where: str, depth: int) -> str:
        """Check one manifest and all under it; returns its media type."""
        if entry.digest in plan.manifests:
            return plan.manifests[entry.digest][0]
        data = self._read(blob_path(entry.digest), MAX_MANIFEST_SIZE)
        if data is None:
            raise BadBundle(f"{where} names manifest {entry.digest}, which the bundle lacks")
        plan.manifest_bytes += len(data)
        if plan.manifest_bytes > MAX_MANIFEST_BYTES:
            raise BadBundle(
                f"manifests of more than {MAX_MANIFEST_BYTES} bytes in all, more than image "
                "bundles have"
            )
        if len(data) != entry.size or Digest.of(data, entry.digest.algorithm) != entry.digest:
            raise BadBundle(f"manifest {entry.digest}: the bytes do not match the digest")
        try:
            contents = read_contents(data)
        except InvalidManifest as e:
            raise BadBundle(f"manifest {entry.digest}: {e}") from None
        if contents.is_index and depth >= MAX_INDEX_DEPTH:
            raise BadBundle(
                f"manifest {entry.digest}: indexes nested more than {MAX_INDEX_DEPTH} deep"
            )
        for child in contents.manifests:
            self._plan_manifest(plan, child, f"manifest {entry.digest}", depth + 1)
        for blob in contents.blobs:
            member = self.member(blob.digest)
            if member is None:
                raise BadBundle(
                    f"manifest {entry.digest} names blob {blob.digest}, which the bundle lacks"
                )
            if member.size != blob.size:
                raise BadBundle(
                    f"blob {blob.digest} has {member.size} bytes; its manifest says {blob.size}"
                )
            plan.blobs[blob.digest] = member
        try:
            # The document's own mediaType is what its registry served it as.
            media_type = served_type(contents.media_type or entry.media_type)
        except InvalidManifest as e:
            raise BadBundle(f"manifest {entry.digest}: {e}") from None
        plan.manifests[entry.digest] = (media_type, data)
        return media_type


def _header_size(member: tarfile.TarInfo) -> int:
    """The bytes of a member's header that its size does not bound: names and pax records."""
    pax = sum(len(key) + len(value) for key, value in member.pax_headers.items())
    return len(member.name) + len(member.linkname) + pax


def _json(data: bytes, name: str) -> dict[str, Any]:
    try:
        document = jsondoc.parse(data)
    except ValueError:
        raise BadBundle(f"{name} is not JSON") from None
    if not isinstance(document, dict):
        raise BadBundle(f"{name} is not a JSON object")
    return document


def _name(entry: dict[str, Any], where: str) -> ImageReference | None:
    """containerd's full name, else a ref.name that is a full reference (a bare tag, which
    the spec also allows there, names no repository)."""
    annotations = entry.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise BadBundle(f"{where}: annotations is not an object")
    text = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME)
    if not isinstance(text, str) or "/" not in text:
        return None
    try:
        return parse_reference(text)
    except InvalidReference as e:
        raise BadBundle(f"{where}: {e}") from None
