"""With the upstream down, every client still pulls cached images by tag and by digest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.catalogue import Catalogue
from tests.e2e.checks import assert_ok
from tests.e2e.clients import Containerd, Docker, Podman, Skopeo
from tests.e2e.daemons import MirrorServer

pytestmark = pytest.mark.e2e


def test_docker_pulls_from_cache_while_upstream_is_down(
    docker: Docker, catalogue: Catalogue, upstream_outage: Callable[[], None]
) -> None:
    """`docker pull` by tag and by digest succeeds from the mirror's cache alone."""
    item = catalogue["docker-offline"]
    assert_ok(docker.pull(item.tag_ref))
    assert_ok(docker.pull(item.digest_ref))
    docker.remove(item.tag_ref)
    upstream_outage()
    assert_ok(docker.pull(item.tag_ref))
    assert docker.image_id(item.tag_ref) == item.image.config.digest
    docker.remove(item.tag_ref)
    assert_ok(docker.pull(item.digest_ref))
    assert docker.image_id(item.digest_ref) == item.image.config.digest


def test_ctr_pulls_from_cache_while_upstream_is_down(
    containerd: Containerd, catalogue: Catalogue, upstream_outage: Callable[[], None]
) -> None:
    """`ctr images pull` by tag and by digest succeeds from the mirror's cache alone."""
    item = catalogue["containerd-offline"]
    assert_ok(containerd.pull(item.tag_ref))
    assert_ok(containerd.pull(item.digest_ref))
    containerd.remove(item.tag_ref)
    containerd.remove(item.digest_ref)
    assert not {b.digest for b in item.image.layers} & containerd.content_digests()
    upstream_outage()
    assert_ok(containerd.pull(item.tag_ref))
    assert containerd.image_digest(item.tag_ref) == item.digest
    containerd.remove(item.tag_ref)
    assert_ok(containerd.pull(item.digest_ref))
    assert containerd.image_digest(item.digest_ref) == item.digest
    assert {b.digest for b in item.image.blobs} <= containerd.content_digests()


def test_podman_pulls_from_cache_while_upstream_is_down(
    podman: Podman, catalogue: Catalogue, upstream_outage: Callable[[], None]
) -> None:
    """`podman pull` by tag and by digest succeeds from the mirror's cache alone."""
    item = catalogue["podman-offline"]
    config_id = item.image.config.digest.removeprefix("sha256:")
    assert_ok(podman.pull(item.tag_ref))
    assert_ok(podman.pull(item.digest_ref))
    podman.remove(item.tag_ref)
    upstream_outage()
    assert_ok(podman.pull(item.tag_ref))
    assert podman.image_id(item.tag_ref) == config_id
    podman.remove(item.tag_ref)
    assert_ok(podman.pull(item.digest_ref))
    assert podman.image_id(item.digest_ref) == config_id


def test_skopeo_copies_from_cache_while_upstream_is_down(
    skopeo: Skopeo,
    mirror: MirrorServer,
    catalogue: Catalogue,
    upstream_outage: Callable[[], None],
    tmp_path: Path,
) -> None:
    """`skopeo copy` by tag and by digest succeeds from the mirror's cache alone."""
    item = catalogue["skopeo-offline"]
    for n, ref in enumerate((item.tag_ref, item.digest_ref)):
        assert_ok(skopeo.copy(f"{mirror.host}/{ref}", f"oci:{tmp_path / f'warm-{n}'}"))
    upstream_outage()
    for n, ref in enumerate((item.tag_ref, item.digest_ref)):
        layout = tmp_path / f"offline-{n}"
        assert_ok(skopeo.copy(f"{mirror.host}/{ref}", f"oci:{layout}"))
        index = json.loads((layout / "index.json").read_text())
        assert [m["digest"] for m in index["manifests"]] == [item.digest]
