"""What a manifest refers to is read from the fields OCI and Docker schema 2 share."""

from __future__ import annotations

import json

import pytest

from mirror.oci.contents import InvalidManifest, media_type_of, read_contents
from mirror.oci.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    OCI_INDEX,
    OCI_MANIFEST,
    is_media_type,
)
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
        (json.dumps({"mediaType": ["x"], "manifests": []}).encode(), "mediaType is not a string"),
        (b"[" * 100_000, "not JSON"),
    ],
)  # fmt: skip
def test_unreadable_manifests_say_why(document: bytes, why: str) -> None:
    """A manifest whose references cannot be read is refused with the reason."""
    with pytest.raises(InvalidManifest, match=why):
        read_contents(document)


def oci_manifest(media_type: object) -> bytes:
    """An OCI image manifest whose own mediaType field is `media_type`."""
    document = json.loads(make_image(oci=True, seed="media-types").manifest)
    document["mediaType"] = media_type
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("media_type", "why"),
    [
        (OCI_MANIFEST + "\r\nX-Injected: 1", "not a media type"),
        (OCI_MANIFEST + "\n", "not a media type"),
        (OCI_MANIFEST + "; charset=utf-8", "not a media type"),
        ("application/" + "x" * 100_000, "not a media type"),
        ("text/html", "not a manifest type"),
        ("application/vnd.oci.image.config.v1+json", "not a manifest type"),
    ],
)
def test_a_manifest_is_never_served_as_what_is_no_manifest_type(media_type: str, why: str) -> None:
    """Its own mediaType decides, whatever its source's type; the refusal quotes it escaped
    and cut short."""
    with pytest.raises(InvalidManifest, match=why) as refused:
        media_type_of(oci_manifest(media_type), OCI_MANIFEST)
    assert len(str(refused.value)) < 200 and "\n" not in str(refused.value)


def test_a_manifest_without_its_own_type_goes_by_its_shape() -> None:
    """No mediaType field (or an empty one): what the document holds decides, whatever its
    source says; bytes that are no JSON object go by their source's type, checked."""
    document = json.loads(oci_manifest(None))
    del document["mediaType"]
    for data in (json.dumps(document).encode(), oci_manifest("")):
        for source in (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, "application/json"):
            assert media_type_of(data, source) == OCI_MANIFEST
    index = b'{"schemaVersion": 2, "manifests": []}'
    assert media_type_of(index, OCI_MANIFEST) == OCI_INDEX
    signed = b'{"schemaVersion": 1, "fsLayers": [], "signatures": []}'
    assert media_type_of(signed, DOCKER_SCHEMA1) == DOCKER_SCHEMA1_SIGNED
    assert media_type_of(b'{"schemaVersion": 1, "fsLayers": []}', OCI_INDEX) == DOCKER_SCHEMA1
    assert media_type_of(b"{not json", OCI_MANIFEST) == OCI_MANIFEST
    with pytest.raises(InvalidManifest, match="not a manifest type"):
        media_type_of(b"{not json", "application/json")


def test_media_types_follow_rfc_6838() -> None:
    """type/subtype of restricted names, 127 characters each at most, nothing else."""
    for good in (OCI_MANIFEST, "a/b", "application/vnd.cncf.helm.config.v1+json", "x/" + "y" * 127):
        assert is_media_type(good), good
    for bad in ("", "a", "/b", "a/", "a/b/c", "a/b c", "a/b\n", "a/b;p=1", "x/" + "y" * 128):
        assert not is_media_type(bad), bad
