"""A second pull of the same image is served from the mirror's cache: no blob GET upstream."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.catalogue import Catalogue
from tests.e2e.checks import any_upstream_blob_gets, assert_ok
from tests.e2e.clients import Containerd, Docker, Podman, Skopeo
from tests.e2e.daemons import MirrorServer
from tests.support.registry import Registry

pytestmark = pytest.mark.e2e


def assert_second_pull_is_hit(
    upstream: Registry, mirror: MirrorServer, mark: int, what: str
) -> None:
    assert "/blobs/" in mirror.log_since(mark), f"{what} asked the mirror for no blob"
    assert any_upstream_blob_gets(upstream) == [], f"{what}: blob GETs reached the upstream"


def test_docker_second_pull_sends_no_blob_get_upstream(
    docker: Docker, mirror: MirrorServer, upstream: Registry, catalogue: Catalogue
) -> None:
    """After `docker rmi`, pulling again fetches every blob from the mirror's cache."""
    item = catalogue["docker-hit"]
    assert_ok(docker.pull(item.tag_ref))
    docker.remove(item.tag_ref)
    assert docker.image_id(item.tag_ref) is None
    upstream.clear_requests()
    mark = mirror.log_size()
    assert_ok(docker.pull(item.tag_ref))
    assert docker.image_id(item.tag_ref) == item.image.config.digest
    assert_second_pull_is_hit(upstream, mirror, mark, "docker")


def test_ctr_second_pull_sends_no_blob_get_upstream(
    containerd: Containerd, mirror: MirrorServer, upstream: Registry, catalogue: Catalogue
) -> None:
    """After `ctr images rm --sync`, pulling again fetches every blob from the mirror's cache."""
    item = catalogue["containerd-hit"]
    assert_ok(containerd.pull(item.tag_ref))
    containerd.remove(item.tag_ref)
    assert not {b.digest for b in item.image.layers} & containerd.content_digests()
    upstream.clear_requests()
    mark = mirror.log_size()
    assert_ok(containerd.pull(item.tag_ref))
    assert containerd.image_digest(item.tag_ref) == item.digest
    assert_second_pull_is_hit(upstream, mirror, mark, "ctr")


def test_podman_second_pull_sends_no_blob_get_upstream(
    podman: Podman, mirror: MirrorServer, upstream: Registry, catalogue: Catalogue
) -> None:
    """After `podman rmi`, pulling again fetches every blob from the mirror's cache."""
    item = catalogue["podman-hit"]
    assert_ok(podman.pull(item.tag_ref))
    podman.remove(item.tag_ref)
    assert podman.image_id(item.tag_ref) is None
    upstream.clear_requests()
    mark = mirror.log_size()
    assert_ok(podman.pull(item.tag_ref))
    assert podman.image_id(item.tag_ref) == item.image.config.digest.removeprefix("sha256:")
    assert_second_pull_is_hit(upstream, mirror, mark, "podman")


def test_skopeo_second_copy_sends_no_blob_get_upstream(
    skopeo: Skopeo,
    mirror: MirrorServer,
    upstream: Registry,
    catalogue: Catalogue,
    tmp_path: Path,
) -> None:
    """A second `skopeo copy` into a fresh directory is served from the mirror's cache."""
    item = catalogue["skopeo-hit"]
    assert_ok(skopeo.copy(f"{mirror.host}/{item.tag_ref}", f"dir:{tmp_path / 'first'}"))
    upstream.clear_requests()
    mark = mirror.log_size()
    assert_ok(skopeo.copy(f"{mirror.host}/{item.tag_ref}", f"dir:{tmp_path / 'second'}"))
    assert (tmp_path / "second" / "manifest.json").read_bytes() == item.image.manifest
    assert_second_pull_is_hit(upstream, mirror, mark, "skopeo")
