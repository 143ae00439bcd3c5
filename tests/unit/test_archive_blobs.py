"""An export copies each blob under a read lease, as a blob sent to a client is: a removal
skips it meanwhile, and a blob removed before its copy began is named as gone."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.images import archive
from mirror.images.archive import VanishedBlob, write_archive
from mirror.images.cached import BlobFile, CachedImage
from mirror.oci.digest import Digest
from mirror.oci.mediatypes import OCI_MANIFEST
from mirror.oci.reference import parse_reference
from mirror.storage import files
from mirror.storage.manifests import StoredManifest


def image_of(blob: BlobFile) -> CachedImage:
    """An image of one blob (the manifest's content is beside the point here)."""
    data = b'{"schemaVersion":2}'
    top = StoredManifest(Digest.of(data), OCI_MANIFEST, data)
    name = parse_reference("docker.io/library/app:1")
    return CachedImage(name, top, {top.digest: top}, {blob.digest: blob})


def test_a_blob_removed_before_its_copy_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    """Removed by gc, rm or eviction after the image was read: the error names the blob (not
    the archive, which could be written), and no archive nor part of one stays."""
    digest = Digest.of(b"layer")
    output = tmp_path / "out"
    output.mkdir()
    with pytest.raises(VanishedBlob, match=f"blob {digest} left the cache"):
        write_archive(output / "bundle.tar", [image_of(BlobFile(digest, tmp_path / "gone", 5))])
    assert list(output.iterdir()) == []


def test_a_blob_being_copied_is_not_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A removal (gc's, eviction's) that comes while the blob is copied skips it."""
    data = b"layer" * 1000
    path = tmp_path / "blob"
    path.write_bytes(data)
    removed: list[bool] = []

    class Removing(archive._HashingReader):
        def read(self, size: int = -1) -> bytes:
            removed.append(files.remove_unless_read(path))
            return super().read(size)

    monkeypatch.setattr(archive, "_HashingReader", Removing)
    write_archive(tmp_path / "bundle.tar", [image_of(BlobFile(Digest.of(data), path, len(data)))])
    assert removed and not any(removed)
    assert path.read_bytes() == data
