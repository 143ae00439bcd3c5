"""podman pulls docker.io images through a registries.conf mirror, with vfs storage."""

from __future__ import annotations

import pytest

from tests.e2e.catalogue import Catalogue
from tests.e2e.checks import assert_fetched_via_mirror, assert_ok
from tests.e2e.clients import Podman
from tests.e2e.daemons import MirrorServer
from tests.support.registry import Registry

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("kind", ["schema2", "oci"])
def test_podman_pull_by_tag_through_registries_conf_mirror(
    podman: Podman, mirror: MirrorServer, upstream: Registry, catalogue: Catalogue, kind: str
) -> None:
    """`podman pull docker.io/library/NAME:TAG` is served by the mirror; ID is the config digest."""
    item = catalogue[f"podman-{kind}"]
    mark = mirror.log_size()
    assert_ok(podman.pull(item.tag_ref))
    assert podman.image_id(item.tag_ref) == item.image.config.digest.removeprefix("sha256:")
    assert_fetched_via_mirror(upstream, mirror, mark, item.repo, item.image)


def test_podman_pull_by_digest(podman: Podman, catalogue: Catalogue) -> None:
    """`podman pull docker.io/library/NAME@sha256:...` through the mirror."""
    item = catalogue["podman-oci"]
    assert_ok(podman.pull(item.digest_ref))
    assert podman.image_id(item.digest_ref) == item.image.config.digest.removeprefix("sha256:")
