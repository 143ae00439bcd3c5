"""Docker pulls docker.io images through `registry-mirrors` (the mirror plays Docker Hub)."""

from __future__ import annotations

import pytest

from tests.e2e.catalogue import Catalogue
from tests.e2e.checks import assert_fetched_via_mirror, assert_ok
from tests.e2e.clients import Docker
from tests.e2e.daemons import MirrorServer
from tests.support.registry import Registry

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("kind", ["schema2", "oci"])
def test_docker_pull_by_tag_gives_image_id_equal_to_config_digest(
    docker: Docker, mirror: MirrorServer, upstream: Registry, catalogue: Catalogue, kind: str
) -> None:
    """`docker pull library/NAME:TAG` succeeds via the mirror; the image ID is the config digest."""
    item = catalogue[f"docker-{kind}"]
    mark = mirror.log_size()
    assert_ok(docker.pull(item.tag_ref))
    assert docker.image_id(item.tag_ref) == item.image.config.digest
    assert docker.inspect(item.tag_ref, "RepoDigests") == f"[{item.name}@{item.digest}]"
    assert_fetched_via_mirror(upstream, mirror, mark, item.repo, item.image)


def test_docker_pull_by_digest_gives_the_same_image(docker: Docker, catalogue: Catalogue) -> None:
    """`docker pull library/NAME@sha256:...` through the mirror yields the tagged image's ID."""
    item = catalogue["docker-schema2"]
    assert_ok(docker.pull(item.digest_ref))
    assert docker.image_id(item.digest_ref) == item.image.config.digest


def test_docker_pull_of_arm64_platform_from_index(
    docker: Docker, mirror: MirrorServer, upstream: Registry, catalogue: Catalogue
) -> None:
    """`docker pull --platform linux/arm64` of a two-platform index gets the arm64 image."""
    item = catalogue["docker-index"]
    arm64 = item.platform("arm64")
    mark = mirror.log_size()
    assert_ok(docker.pull(item.tag_ref, platform="linux/arm64"))
    assert docker.image_id(item.tag_ref) == arm64.config.digest
    assert docker.inspect(item.tag_ref, "Architecture") == "arm64"
    assert_fetched_via_mirror(upstream, mirror, mark, item.repo, arm64)


def test_docker_pull_of_thirty_layer_image(
    docker: Docker, mirror: MirrorServer, upstream: Registry, catalogue: Catalogue
) -> None:
    """An image of 30 layers, fetched by docker in parallel, arrives complete."""
    item = catalogue["docker-layers"]
    mark = mirror.log_size()
    assert_ok(docker.pull(item.tag_ref))
    assert docker.image_id(item.tag_ref) == item.image.config.digest
    layers = docker.inspect(item.tag_ref, "RootFS.Layers")
    assert layers is not None
    assert len(layers.strip("[]").split()) == len(item.image.layers)
    assert_fetched_via_mirror(upstream, mirror, mark, item.repo, item.image)


def test_docker_pull_of_image_with_200_mib_layer(
    docker: Docker, mirror: MirrorServer, upstream: Registry, catalogue: Catalogue
) -> None:
    """A single 200+ MiB incompressible layer streams through the mirror intact."""
    item = catalogue["docker-big"]
    mark = mirror.log_size()
    assert_ok(docker.pull(item.tag_ref))
    assert docker.image_id(item.tag_ref) == item.image.config.digest
    size = docker.inspect(item.tag_ref, "Size")
    assert size is not None
    assert int(size) >= item.image.layers[0].size - 64 * 1024
    assert_fetched_via_mirror(upstream, mirror, mark, item.repo, item.image)
