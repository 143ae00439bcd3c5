"""What a manifest refers to is read from the fields OCI and Docker schema 2 share."""

from __future__ import annotations

import json

import pytest

from mirror.oci.contents import InvalidManifest, read_contents
from tests.support.images import make_image, make_index


def test_an_image_lists_its_config_then_its_layers() -> None:
    """A Docker schema 2 image: not an index, blobs in order with their sizes."""
    image = make_image(layer_sizes=(10, 20), seed="contents")
    contents = read_contents(image.manifest)
    assert not contents.is_index
    assert [(str(b.digest), b.size) for b in contents.blobs] == [
        (blob.digest, blob.size) for blob in image.blobs
    ]
    assert contents.media_type == image.media_type


def test_an_index_lists_its_manifests_with_their_platforms() -> None:
    """An OCI index: its entries, each with the platform it declares."""
    index = make_index([make_image(oci=True, arch=a, seed="contents") for a in ("amd64", "arm64")])
    contents = read_contents(index.manifest)
    assert contents.is_index and contents.blobs == ()
    assert [str(m.digest) for m in contents.manifests] == [i.digest for i in index.images]
    assert [m.platform and m.platform["architecture"] for m in contents.manifests] == [
        "amd64",
        "arm64",
    ]


@pytest.mark.parametrize(
    ("document", "why"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(), "schema 1"),
        (json.dumps({"schemaVersion": 2}).encode(), "neither manifests nor config"),
        (json.dumps({"manifests": [{"mediaType": "x", "size": 1}]}).encode(), "digest"),
        (json.dumps({"manifests": [{"digest": "sha256:" + "0" * 64, "size": 1}]}).encode(),
         "no mediaType"),
        (json.dumps({"config": {"mediaType": "x", "digest": "sha256:" + "0" * 64, "size": -1},
                     "layers": []}).encode(), "no valid size"),
    ],
)  # fmt: skip
def test_unreadable_manifests_say_why(document: bytes, why: str) -> None:
    """A manifest whose references cannot be read is refused with the reason."""
    with pytest.raises(InvalidManifest, match=why):
        read_contents(document)
