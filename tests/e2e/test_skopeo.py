"""skopeo copies and inspects through the mirror exactly what the upstream serves directly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.catalogue import Catalogue
from tests.e2e.checks import assert_fetched_via_mirror, assert_ok
from tests.e2e.clients import Skopeo
from tests.e2e.daemons import MirrorServer
from tests.support.registry import Registry

pytestmark = pytest.mark.e2e


def oci_layout(path: Path) -> tuple[str, set[str]]:
    """(manifest digest recorded in index.json, names of every blob) of an OCI layout."""
    index = json.loads((path / "index.json").read_text())
    (manifest,) = index["manifests"]
    blobs = {f"sha256:{p.name}" for p in (path / "blobs" / "sha256").iterdir()}
    return manifest["digest"], blobs


def test_skopeo_copy_of_oci_image_by_tag_equals_direct_copy(
    skopeo: Skopeo,
    mirror: MirrorServer,
    upstream: Registry,
    catalogue: Catalogue,
    tmp_path: Path,
) -> None:
    """`skopeo copy docker://MIRROR/library/NAME:TAG oci:DIR` gives the upstream's digests."""
    item = catalogue["skopeo-oci"]
    mark = mirror.log_size()
    assert_ok(skopeo.copy(f"{mirror.host}/{item.tag_ref}", f"oci:{tmp_path / 'via'}:{item.name}"))
    assert_fetched_via_mirror(upstream, mirror, mark, item.repo, item.image)
    assert_ok(skopeo.copy(f"{upstream.host}/{item.tag_ref}", f"oci:{tmp_path / 'direct'}:x"))
    via, direct = oci_layout(tmp_path / "via"), oci_layout(tmp_path / "direct")
    assert via == direct
    assert via[0] == item.digest
    assert via[1] == {item.digest} | {blob.digest for blob in item.image.blobs}


def test_skopeo_copy_of_schema2_image_to_dir_is_byte_identical(
    skopeo: Skopeo, mirror: MirrorServer, upstream: Registry, catalogue: Catalogue, tmp_path: Path
) -> None:
    """A schema2 image copied to `dir:` via the mirror has the upstream's exact manifest bytes."""
    item = catalogue["skopeo-schema2"]
    mark = mirror.log_size()
    assert_ok(skopeo.copy(f"{mirror.host}/{item.tag_ref}", f"dir:{tmp_path / 'via'}"))
    assert_fetched_via_mirror(upstream, mirror, mark, item.repo, item.image)
    assert_ok(skopeo.copy(f"{upstream.host}/{item.tag_ref}", f"dir:{tmp_path / 'direct'}"))
    via = (tmp_path / "via" / "manifest.json").read_bytes()
    assert via == (tmp_path / "direct" / "manifest.json").read_bytes()
    assert via == item.image.manifest
    for blob in item.image.blobs:
        assert (tmp_path / "via" / blob.digest.removeprefix("sha256:")).read_bytes() == blob.data


def test_skopeo_copy_by_digest(
    skopeo: Skopeo, mirror: MirrorServer, catalogue: Catalogue, tmp_path: Path
) -> None:
    """`skopeo copy docker://MIRROR/library/NAME@sha256:... oci:DIR` keeps the digest."""
    item = catalogue["skopeo-oci"]
    assert_ok(skopeo.copy(f"{mirror.host}/{item.digest_ref}", f"oci:{tmp_path / 'via'}"))
    digest, blobs = oci_layout(tmp_path / "via")
    assert digest == item.digest
    assert {blob.digest for blob in item.image.blobs} <= blobs


@pytest.mark.parametrize("kind", ["schema2", "oci"])
def test_skopeo_inspect_via_mirror_matches_upstream(
    skopeo: Skopeo, mirror: MirrorServer, upstream: Registry, catalogue: Catalogue, kind: str
) -> None:
    """`skopeo inspect` through the mirror reports the upstream's digest, layers and raw bytes."""
    item = catalogue[f"skopeo-{kind}"]
    via = skopeo.inspect(f"{mirror.host}/{item.tag_ref}")
    direct = skopeo.inspect(f"{upstream.host}/{item.tag_ref}")
    assert_ok(via)
    assert_ok(direct)
    via_doc, direct_doc = json.loads(via.stdout), json.loads(direct.stdout)
    assert via_doc["Digest"] == direct_doc["Digest"] == item.digest
    assert via_doc["Layers"] == direct_doc["Layers"] == [b.digest for b in item.image.layers]
    raw = skopeo.inspect(f"{mirror.host}/{item.tag_ref}", raw=True)
    assert_ok(raw)
    assert raw.stdout.encode() == item.image.manifest
