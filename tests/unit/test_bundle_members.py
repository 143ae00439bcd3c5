"""An import reads a bundle's member headers one at a time, and refuses an archive past the
bounds on their count and size before it has read the rest, or one whose compression is
damaged."""

from __future__ import annotations

import gzip
import io
import json
import lzma
import tarfile
import zlib
from pathlib import Path

import pytest

from mirror.images import bundle
from mirror.images.bundle import BadBundle, Bundle
from mirror.oci.digest import Digest
from mirror.oci.mediatypes import OCI_MANIFEST
from tests.support.images import OCI_CONFIG, OCI_LAYER


def archive(path: Path, members: int, pax: dict[str, str] | None = None) -> Path:
    """A gzip'd tar of empty members, cut off two thirds of the way through."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for n in range(members):
            member = tarfile.TarInfo(f"empty/{n}")
            member.pax_headers = dict(pax or {})
            tar.addfile(member)
    compressed = gzip.compress(raw.getvalue())
    path.write_bytes(compressed[: len(compressed) * 2 // 3])
    return path


def test_members_past_the_count_are_refused_before_the_rest_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive is cut short after the bound: the count, not the damage, is reported."""
    monkeypatch.setattr(bundle, "MAX_MEMBERS", 100)
    with pytest.raises(BadBundle, match="more than 100 members"):
        Bundle(archive(tmp_path / "many.tar.gz", 1000))
    with pytest.raises(BadBundle, match="truncated or damaged"):
        Bundle(archive(tmp_path / "few.tar.gz", 90))


def test_member_headers_past_their_size_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names and pax records count, which a few bytes of gzip can make large."""
    monkeypatch.setattr(bundle, "MAX_HEADER_BYTES", 100_000)
    with pytest.raises(BadBundle, match="headers of more than 100000 bytes"):
        Bundle(archive(tmp_path / "wordy.tar.gz", 300, {"comment": "x" * 1000}))


def layout(path: Path) -> bytes:
    """The bytes of a small, valid-looking tar of a few members (written to `path` too)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for n in range(20):
            data = bytes(range(256)) * 40 * (n + 1)
            member = tarfile.TarInfo(f"blobs/sha256/{n:064x}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    path.write_bytes(raw.getvalue())
    return raw.getvalue()


def damaged_deflate(data: bytes) -> bytes:
    """A gzip stream whose deflate data turns invalid a third of the way in (a block of the
    reserved type, RFC 1951 §3.2.3), as a corrupted copy can."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = compressor.compress(data[: len(data) // 3]) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return gzip.compress(b"")[:10] + body + b"\x07" * 64


@pytest.mark.parametrize("case", ["gzip cut in its first header", "xz damaged", "deflate damaged"])
def test_a_damaged_compressed_archive_is_refused_as_damaged(tmp_path: Path, case: str) -> None:
    """What the decompressors raise for a damaged stream (EOFError, zlib.error, LZMAError,
    which tarfile lets through) is the one-line refusal, not a traceback."""
    data = layout(tmp_path / "bundle.tar")
    path = tmp_path / "bad"
    if case == "gzip cut in its first header":
        path.write_bytes(gzip.compress(data)[:100])
    elif case == "xz damaged":
        compressed = bytearray(lzma.compress(data))
        middle = len(compressed) // 2
        compressed[middle : middle + 64] = bytes(b ^ 0x55 for b in compressed[middle : middle + 64])
        path.write_bytes(compressed)
    else:
        path.write_bytes(damaged_deflate(data))
    with pytest.raises(BadBundle, match="truncated or damaged"):
        Bundle(path).close()


def bundle_of(path: Path, manifests: int) -> Path:
    """An OCI layout of `manifests` images sharing one config and one layer."""
    members: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}
    config, layer = b"{}", b"layer"
    blobs = []
    for data, media_type in ((config, OCI_CONFIG), (layer, OCI_LAYER)):
        digest = Digest.of(data)
        members[f"blobs/sha256/{digest.hex}"] = data
        blobs.append({"mediaType": media_type, "digest": str(digest), "size": len(data)})
    entries = []
    for n in range(manifests):
        document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": blobs[0]}
        data = json.dumps({**document, "layers": blobs[1:], "annotations": {"n": str(n)}})
        digest = Digest.of(data.encode())
        members[f"blobs/sha256/{digest.hex}"] = data.encode()
        entries.append({"mediaType": OCI_MANIFEST, "digest": str(digest), "size": len(data)})
    members["index.json"] = json.dumps({"schemaVersion": 2, "manifests": entries}).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return path


def test_manifests_past_their_size_in_all_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan holds every manifest until it is stored, and a few bytes of gzip can make each
    one 4 MiB of white space: their size in all is bounded too."""
    monkeypatch.setattr(bundle, "MAX_MANIFEST_BYTES", 2000)
    few = Bundle(bundle_of(tmp_path / "few.tar", 4))
    try:
        assert len(few.plan().manifests) == 4
    finally:
        few.close()
    many = Bundle(bundle_of(tmp_path / "many.tar", 20))
    try:
        with pytest.raises(BadBundle, match="manifests of more than 2000 bytes in all"):
            many.plan()
    finally:
        many.close()
