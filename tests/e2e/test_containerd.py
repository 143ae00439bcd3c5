"""containerd (`ctr`) pulls docker.io images with a hosts.toml whose server is the mirror."""

from __future__ import annotations

import pytest

from tests.e2e.catalogue import TAG, Catalogue
from tests.e2e.checks import assert_fetched_via_mirror, assert_ok
from tests.e2e.clients import Containerd
from tests.e2e.daemons import MirrorServer
from tests.support.registry import Registry

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("kind", ["schema2", "oci"])
def test_ctr_pull_by_tag_through_hosts_toml(
    containerd: Containerd,
    mirror: MirrorServer,
    upstream: Registry,
    catalogue: Catalogue,
    kind: str,
) -> None:
    """`ctr images pull --hosts-dir` resolves and fetches via the mirror, adding ?ns=docker.io."""
    item = catalogue[f"containerd-{kind}"]
    mark = mirror.log_size()
    outcome = containerd.pull(item.tag_ref)
    assert_ok(outcome)
    assert containerd.image_digest(item.tag_ref) == item.digest
    assert {blob.digest for blob in item.image.blobs} <= containerd.content_digests()
    manifest_url = f"{mirror.url}/v2/{item.repo}/manifests/{TAG}?ns=docker.io"
    assert f'url="{manifest_url}"' in outcome.output, "ctr did not ask the mirror with ?ns="
    assert_fetched_via_mirror(upstream, mirror, mark, item.repo, item.image)


def test_ctr_pull_by_digest(containerd: Containerd, catalogue: Catalogue) -> None:
    """`ctr images pull docker.io/library/NAME@sha256:...` through the mirror."""
    item = catalogue["containerd-oci"]
    assert_ok(containerd.pull(item.digest_ref))
    assert containerd.image_digest(item.digest_ref) == item.digest
    assert {blob.digest for blob in item.image.blobs} <= containerd.content_digests()


def test_ctr_pull_of_arm64_platform_from_index(
    containerd: Containerd, mirror: MirrorServer, upstream: Registry, catalogue: Catalogue
) -> None:
    """`ctr images pull --platform linux/arm64` of an index fetches the arm64 child's blobs."""
    item = catalogue["containerd-index"]
    arm64 = item.platform("arm64")
    mark = mirror.log_size()
    assert_ok(containerd.pull(item.tag_ref, platform="linux/arm64"))
    assert containerd.image_digest(item.tag_ref) == item.digest
    assert {blob.digest for blob in arm64.blobs} <= containerd.content_digests()
    assert_fetched_via_mirror(upstream, mirror, mark, item.repo, arm64)
