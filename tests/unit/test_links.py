"""What the upkeep reads a manifest to link to: every digest it names as a part of itself."""

from __future__ import annotations

import json

from mirror.cache.links import links
from mirror.oci.digest import Digest

A, B, C, D = (f"sha256:{n:064x}" for n in range(1, 5))


def test_an_image_links_its_config_and_layers() -> None:
    """config and layers are blobs; an odd descriptor beside them costs nothing."""
    document = {
        "config": {"digest": A},
        "layers": [{"digest": B}, {"digest": "not-a-digest"}, {"size": 3}],
        "subject": {"digest": D},  # what this manifest refers to, not part of it
    }
    found = links(json.dumps(document).encode())
    assert found.blobs == {Digest.parse(A), Digest.parse(B)}
    assert found.manifests == frozenset()


def test_an_index_links_its_manifests() -> None:
    """An index's entries are child manifests, whatever their platform."""
    found = links(json.dumps({"manifests": [{"digest": A}, {"digest": B}]}).encode())
    assert found.manifests == {Digest.parse(A), Digest.parse(B)}
    assert found.blobs == frozenset()


def test_artifacts_and_schema1_link_their_blobs() -> None:
    """An artifact manifest's `blobs` and a schema 1 manifest's `fsLayers` count too."""
    assert links(json.dumps({"blobs": [{"digest": C}]}).encode()).blobs == {Digest.parse(C)}
    schema1 = {"schemaVersion": 1, "fsLayers": [{"blobSum": D}, {"blobSum": D}]}
    assert links(json.dumps(schema1).encode()).blobs == {Digest.parse(D)}


def test_what_is_not_a_manifest_links_nothing() -> None:
    """Bytes that are not a JSON object link nothing (and raise nothing)."""
    for data in (b"", b"\xff", b"[1]", b'"text"'):
        found = links(data)
        assert (found.manifests, found.blobs) == (frozenset(), frozenset())
